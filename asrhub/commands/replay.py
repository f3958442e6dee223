"""``asrhub replay``: run a recorded session again (docs/trace.md).

    asrhub replay FILE                            the session's events, as sent on the wire
    asrhub replay FILE --engine whisper:base      the recorded audio through another engine:
                                                  a diff of the finals (recorded → that engine)
    asrhub replay FILE --engine vosk --json       the same, as JSON lines

FILE is a trace (``trace.dir``/<session id>.trace, or ``GET /v1/sessions/{id}/trace``). Without
``--engine`` the session's own pipeline runs on the recorded input, with the engine's recorded
outputs in place of the engine, and the events are printed one JSON object per line, byte for
byte as the hub sent them (``session.started`` first). No engine is loaded and no clock is
used: a replay is deterministic and runs as fast as the chain. Exit status: 0 done, 1 the
replay failed, 2 bad arguments or an unreadable trace.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    from asrhub.settings.loader import add_settings_arguments

    parser: argparse.ArgumentParser = subparsers.add_parser(
        "replay",
        help="re-run a recorded session (a trace) and print its events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="a session trace")
    parser.add_argument(
        "--engine",
        metavar="NAME[:MODEL]",
        help="re-transcribe the recorded audio with this engine and print a diff of the finals",
    )
    parser.add_argument("--json", action="store_true", help="with --engine: the finals as JSON lines")
    add_settings_arguments(parser, server_flags=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from asrhub.commands.loading import settings_or_report
    from asrhub.trace.records import TraceError
    from asrhub.trace.replay import load

    loaded = settings_or_report(args, "asrhub replay")
    if loaded is None:
        return 2
    try:
        trace = load(Path(args.file).read_bytes())
    except (OSError, TraceError) as exc:
        print(f"asrhub replay: {args.file}: {exc}", file=sys.stderr)
        return 2
    from asrhub.trace.recorder import hub_version

    if trace.header.hub_version != hub_version():
        print(
            f"asrhub replay: recorded by asrhub {trace.header.hub_version}, replayed with "
            f"{hub_version()}: a changed stage may change the events",
            file=sys.stderr,
        )
    if trace.truncated is not None:
        print(
            f"asrhub replay: the trace was truncated ({trace.truncated.reason}): "
            "the replay covers the part it holds",
            file=sys.stderr,
        )
    if args.engine:
        return asyncio.run(_engine(args, loaded.settings, trace))
    return asyncio.run(_replay(trace))


async def _replay(trace: Any) -> int:
    from asrhub.trace.replay import replay
    from asrhub.wiring import build_pipeline

    try:
        lines = await replay(trace, build_pipeline)
    except Exception as exc:  # a trace this hub cannot rebuild: say why, not a traceback
        print(f"asrhub replay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()
    return 0


async def _engine(args: argparse.Namespace, settings: Any, trace: Any) -> int:
    from asrhub.api import _settings_for, open_hub
    from asrhub.engine.registry import UnknownProvider
    from asrhub.errors import HubError
    from asrhub.plugin import ProviderUnavailable
    from asrhub.trace.replay import run_chain, with_engine

    name, _, model = str(args.engine).partition(":")
    try:
        async with open_hub(_settings_for(settings, name)) as hub:
            provider, chosen = hub.resolve_model(args.engine if model else name)
            provider = provider or name
            config = hub.resolve_config(with_engine(trace.config, provider, chosen or None))
            events = await run_chain(
                trace,
                hub.pipeline_factory,
                providers=(hub.providers[provider],),
                config=config,
                timeout_s=max(60.0, 10 * len(trace.audio()) / 32_000),
            )
    except UnknownProvider as exc:
        print(f"asrhub replay: unknown engine {exc.args[0]!r}", file=sys.stderr)
        return 2
    except (ProviderUnavailable, HubError) as exc:
        print(f"asrhub replay: {exc}", file=sys.stderr)
        return 2
    recorded = trace.finals()
    fresh = [e.to_dict() for e in events if e.type == "transcript.final"]
    if args.json:
        for side, finals in (("recorded", recorded), (args.engine, fresh)):
            for final in finals:
                print(json.dumps({"source": side, **_brief(final)}, ensure_ascii=False))
        return 0
    before = [_line(f) for f in recorded]
    after = [_line(f) for f in fresh]
    label = f"{trace.header.provider or 'none'} (recorded)"
    diff = list(
        difflib.unified_diff(before, after, label, args.engine, lineterm="", n=len(before) + len(after))
    )
    print("\n".join(diff) if diff else f"the finals are the same with {args.engine}")
    return 0


def _brief(final: dict[str, Any]) -> dict[str, Any]:
    return {k: final.get(k) for k in ("segment_id", "start", "end", "text")}


def _line(final: dict[str, Any]) -> str:
    return f"[{final['segment_id']}] {final['start']:.2f}-{final['end']:.2f} {str(final['text']).strip()}"
