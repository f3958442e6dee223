"""``asrhub stream FILE``: stream a file to a running hub over WebSocket and print the results.

Finals are printed one per line (``[start-end] text``); on a terminal the current partial is
shown on the line being written and replaced as it changes. ``--json`` prints every event as
one JSON line instead.

The session is resumable when the hub offers it (``--resume``, the default): if the connection
drops, or the hub hands the session over because it is shutting down (a rolling restart), the
command reconnects to the same URL — behind a load balancer, any live node — resumes the
session and re-sends the audio the hub did not confirm, for up to ``--resume-timeout`` seconds.

Exit status:
  0  the whole file was transcribed: the session ended normally (session.closed "end") and
     the hub reported no error
  1  the transcript is incomplete: a fatal error, any other error the hub reported (an
     utterance without its final, audio it could not take), the connection lost and not
     resumed, or the session closed early; the last line on stderr says why
  2  the file does not exist, or the hub could not be reached or refused the session
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
RESUME_TIMEOUT_S = 30.0


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
    parser.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="resume the session after a lost connection or a hand-over, where the hub offers it "
        "(default: on)",
    )
    parser.add_argument(
        "--resume-timeout",
        type=float,
        default=RESUME_TIMEOUT_S,
        metavar="SECONDS",
        help=f"how long to keep trying to resume (default {RESUME_TIMEOUT_S:g})",
    )
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
        elif kind == "error" and not data.get("fatal"):  # a fatal one is the exit's reason line
            self._clear()
            print(f"error {data['code']}: {data['message']}", file=sys.stderr, flush=True)

    def done(self) -> None:
        self._clear()


class Outcome:
    """What the session came to: whether the transcript is whole, and if not, why."""

    def __init__(self) -> None:
        self.started = False
        self.finals = 0
        self.closed: str | None = None
        self.fatal: str | None = None
        self.errors = 0
        self.lost: str | None = None

    def see(self, event: Any) -> None:
        from asrhub.frames import ErrorEvent, FinalTranscript, SessionClosed, SessionStarted

        if isinstance(event, SessionStarted):
            self.started = True
        elif isinstance(event, FinalTranscript):
            self.finals += 1
        elif isinstance(event, ErrorEvent):
            if event.fatal:
                self.fatal = self.fatal or f"{event.code}: {event.message}"
            else:
                self.errors += 1
        elif isinstance(event, SessionClosed):
            self.closed = event.reason

    def reason(self) -> str | None:
        """None when the transcript is whole, else one line saying why it is not."""
        if self.fatal is not None:
            why = f"fatal error {self.fatal}"
        elif self.lost is not None:
            why = self.lost
        elif self.closed is None:
            why = "the connection to the hub was lost and the session was not resumed"
        elif self.closed != "end":
            why = f"the session closed early (reason {self.closed!r})"
        elif self.errors:
            why = f"the hub reported {self.errors} error(s)"
        else:
            return None
        return f"transcript incomplete: {why} ({self.finals} final(s) received)"


def _one_line(text: str) -> str:
    return " ".join(text.split())


async def _run(args: argparse.Namespace) -> int:
    import aiohttp

    from asrhub.client import stream
    from asrhub.errors import HubError

    config: dict[str, Any] = {}
    if args.provider:
        config["provider"] = args.provider
    if args.language:
        config["language"] = args.language
    if args.no_partials:
        config["partials"] = False
    printer = Printer(args.json)
    outcome = Outcome()
    try:
        async for event in stream(
            args.url,
            args.file,
            config=config,
            api_key=args.api_key or os.environ.get("ASRHUB_API_KEY"),
            realtime=args.realtime,
            resume=args.resume,
            resume_for_s=args.resume_timeout,
        ):
            outcome.see(event)
            printer.event(event.to_dict())
    except HubError as exc:
        printer.done()
        if not outcome.started:
            print(_one_line(f"asrhub: {exc.code}: {exc.message}"), file=sys.stderr)
            return 2
        outcome.lost = f"{exc.code}: {exc.message}"
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        printer.done()
        if not outcome.started:
            print(_one_line(f"asrhub: cannot reach {args.url}: {exc}"), file=sys.stderr)
            return 2
        outcome.lost = f"lost the connection to the hub and could not resume it ({exc or type(exc).__name__})"
    printer.done()
    reason = outcome.reason()
    if reason is None:
        return 0
    print(_one_line(f"asrhub: {reason}"), file=sys.stderr, flush=True)
    return 1


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.file):
        print(f"asrhub: no such file: {args.file}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))
