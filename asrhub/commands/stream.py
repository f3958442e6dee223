"""``asrhub stream FILE``: stream a file to a running hub over WebSocket and print the results.

Finals are printed one per line (``[start-end] text``); on a terminal the current partial is
shown on the line being written and replaced as it changes. ``--json`` prints every event as
one JSON line instead. Exit status: 0 when the session closed normally, 1 after a fatal error,
2 when the hub could not be reached or refused the session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from typing import Any

DEFAULT_URL = "ws://127.0.0.1:8080/v1/stream"


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "stream",
        help="stream an audio file to a running hub and print its transcripts",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="audio file (WAV is sent as is; others are decoded)")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"the hub's WebSocket endpoint (default {DEFAULT_URL})"
    )
    parser.add_argument("--realtime", action="store_true", help="pace the audio at the speed it plays")
    parser.add_argument("--provider", help="provider name (default: the hub's default)")
    parser.add_argument("--language", help="language code, e.g. en")
    parser.add_argument("--no-partials", action="store_true", help="ask for finals only")
    parser.add_argument("--api-key", default=None, help="API key (default: $ASRHUB_API_KEY)")
    parser.add_argument("--json", action="store_true", help="print every event as a JSON line")
    parser.set_defaults(func=run)


class Printer:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty()
        self.partial_shown = False

    def _clear(self) -> None:
        if self.partial_shown:
            sys.stdout.write("\r\033[K")
            self.partial_shown = False

    def event(self, data: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(data), flush=True)
            return
        kind = data["type"]
        if kind == "transcript.partial" and self.tty:
            width = shutil.get_terminal_size().columns - 1
            sys.stdout.write("\r\033[K… " + data["text"].strip()[-(width - 2) :])
            sys.stdout.flush()
            self.partial_shown = True
        elif kind == "transcript.final":
            self._clear()
            print(f"[{data['start']:7.2f}-{data['end']:7.2f}] {data['text'].strip()}", flush=True)
        elif kind == "error":
            self._clear()
            print(f"error {data['code']}: {data['message']}", file=sys.stderr, flush=True)

    def done(self) -> None:
        self._clear()


async def _run(args: argparse.Namespace) -> int:
    from asrhub.client import stream
    from asrhub.errors import HubError
    from asrhub.frames import ErrorEvent

    config: dict[str, Any] = {}
    if args.provider:
        config["provider"] = args.provider
    if args.language:
        config["language"] = args.language
    if args.no_partials:
        config["partials"] = False
    printer = Printer(args.json)
    status = 0
    try:
        async for event in stream(
            args.url,
            args.file,
            config=config,
            api_key=args.api_key or os.environ.get("ASRHUB_API_KEY"),
            realtime=args.realtime,
        ):
            printer.event(event.to_dict())
            if isinstance(event, ErrorEvent) and event.fatal:
                status = 1
    except HubError as exc:
        printer.done()
        print(f"asrhub: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        printer.done()
        print(f"asrhub: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    printer.done()
    return status


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.file):
        print(f"asrhub: no such file: {args.file}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))
