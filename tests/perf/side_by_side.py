"""What the side-by-side latency benchmarks share (``bench_compat``: native WebSocket vs Deepgram
vs OpenAI Realtime; ``bench_grpc_wyoming``: WebSocket vs gRPC vs Wyoming): real-time pacing of the
audio, the rounds in which the contenders take turns on the same clips, and the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import psutil
from common import (
    SPEECH_FIXTURES,
    Sampler,
    Server,
    StreamAudio,
    Table,
    latency_table,
    markdown,
    print_tables,
    stream_audio,
)

from tests.audio_utils import wer

FRAME_S = 0.1
Run = Callable[[tuple[str, ...], int], tuple[list[Table], list[dict[str, Any]]]]
"""A benchmark's ``run(fixtures, repeat)`` → (tables, rows)."""


async def paced(pcm: bytes, rate: int = 16_000) -> AsyncIterator[bytes]:
    """PCM16 ``pcm`` in 100 ms frames, each yielded when its audio would have been spoken."""
    step = int(rate * FRAME_S) * 2
    t0 = time.monotonic()
    for i in range(0, len(pcm), step):
        delay = t0 + i / (rate * 2) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield pcm[i : i + step]


async def take_turns(
    key: str,
    names: Sequence[str],
    one: Callable[[str, StreamAudio], Awaitable[tuple[float, str]]],
    fixtures: tuple[str, ...],
    repeat: int,
    tail_s: float,
) -> list[dict[str, Any]]:
    """``repeat`` rounds over ``fixtures`` (0.5 s of room tone before each clip, ``tail_s``
    after): for each clip every contender in ``names`` runs ``one(name, audio)`` → (latency in
    seconds, text), one after another, the first of them rotating each round so machine load hits
    them alike. One row per run, the contender under ``key``, with its WER and the load."""
    rows = []
    width = max(map(len, names))
    for r in range(repeat):
        for clip in fixtures:
            audio = stream_audio(clip, lead_s=0.5, tail_s=tail_s, seed=r)
            order = [*names[r % len(names) :], *names[: r % len(names)]]  # who goes first rotates
            for name in order:
                latency, text = await one(name, audio)
                rows.append(
                    {
                        key: name,
                        "clip": clip,
                        "latency_ms": latency * 1000,
                        "wer": wer(audio.texts[0], text),
                        "load1": os.getloadavg()[0],
                    }
                )
                print(f"  {name:{width}s} {clip:22s} {latency * 1000:7.0f} ms  {text!r}", file=sys.stderr)
    return rows


def measured(
    server: Server, measure: Coroutine[Any, Any, list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], float]:
    """Run ``measure`` against ``server``: its rows, and how busy the machine was meanwhile
    (percent, all cores together)."""
    with Sampler(server.ps) as sampler:
        start = time.monotonic()
        rows = asyncio.run(measure)
        busy = sampler.machine_busy(start, time.monotonic())
    return rows, busy


def side_table(
    title: str, key: str, names: Sequence[str], rows: list[dict[str, Any]], busy: float, note: str = ""
) -> Table:
    """The contenders' latency table; its note gives the machine's load and the set-up."""
    return latency_table(
        title,
        key,
        names,
        rows,
        f"machine busy {busy:.0f}% of 200% (2 cores) during the run; {psutil.cpu_count()} CPUs; "
        f"real-time streams, one at a time, 100 ms frames{note}",
    )


def main(doc: str | None, run: Run) -> None:
    """The command line of a side-by-side benchmark: ``--repeat``, ``--quick``, ``--markdown``,
    ``--json``; ``run(fixtures, repeat)`` measures."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="two clips, one round")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    fixtures = SPEECH_FIXTURES[:2] if args.quick else SPEECH_FIXTURES
    tables, rows = run(fixtures, 1 if args.quick else args.repeat)
    print_tables(tables)
    if args.markdown:
        print(markdown(tables))
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps({"rows": rows, "tables": [t.to_dict() for t in tables]}, indent=1)
        )
