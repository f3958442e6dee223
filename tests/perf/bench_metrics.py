#!/usr/bin/env python3
"""What metrics cost on the per-chunk hot path: ``Session.feed`` with and without them.

    uv run --frozen python tests/perf/bench_metrics.py [--sessions 1000] [--seconds 5]

Opens N real sessions (provider ``none``: decode → resample → vad_gate), feeds each the same
speech-and-silence fixture in 100 ms PCM16 chunks round-robin (as N live clients would), and
prints the mean CPU time (process_time, so other processes on the machine matter less) of one
``feed`` for:

* stage timing off (``[metrics] operator_sample = 0``): only the plain-int counters and the
  per-event hook remain, which cannot be switched off;
* stage timing in one session of 8 (the default), and in every session (``operator_sample = 1``);

then micro-benchmarks the always-on part (two int attribute increments per feed) against what
it replaces (two ``prometheus_client`` ``Counter.labels(...).inc()`` calls per feed), and
converts everything into the share of one core at 10 chunks/s per session.
Not a pytest module.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry, Counter

from asrhub.config import Limits
from asrhub.logging import configure as configure_logging
from asrhub.metrics import hub as metrics
from asrhub.settings.schema import LogSettings, MetricsSettings, Settings
from asrhub.wiring import build_hub
from tests.audio_utils import fixture, load_wav, pcm16_bytes


def chunks_of(name: str, chunk_s: float = 0.1) -> list[bytes]:
    samples, rate = load_wav(fixture(name))
    data = pcm16_bytes(samples)
    step = int(rate * chunk_s) * 2
    return [data[i : i + step] for i in range(0, len(data) - step + 1, step)]


async def feed_cost(sessions: int, seconds: float, sample_every: int) -> float:
    """Mean wall time of one feed (µs) with ``sessions`` open, over ``seconds`` of audio each."""
    limits = Limits(max_sessions=sessions + 1, idle_timeout_s=3600.0)
    every = MetricsSettings(operator_sample=sample_every)
    hub = build_hub(Settings(default_provider="none", limits=limits, metrics=every))
    opened = [hub.open({"provider": "none"}, transport="bench") for _ in range(sessions)]
    chunks = chunks_of("silences.wav")[: int(seconds * 10)]
    gc.collect()
    start = time.process_time()
    for chunk in chunks:
        for session in opened:
            await session.feed(chunk)
    elapsed = time.process_time() - start
    for session in opened:
        session.close()
    await hub.shutdown(grace_s=1.0)
    return elapsed / (len(chunks) * sessions) * 1e6


def counter_cost(n: int = 1_000_000, repeat: int = 5) -> tuple[float, float]:
    """ns per feed: two plain-int increments vs two prometheus_client Counter increments."""
    runs = [_counter_cost(n) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def _counter_cost(n: int) -> tuple[float, float]:
    counters = metrics.StreamCounters()
    size = 3200
    start = time.process_time()
    for _ in range(n):
        c = counters
        c.frames_in += 1
        c.bytes_in += size
    plain = (time.process_time() - start) / n * 1e9
    registry = CollectorRegistry()
    frames = Counter("bench_frames", "", ["transport"], registry=registry)
    nbytes = Counter("bench_bytes", "", ["transport"], registry=registry)
    start = time.process_time()
    for _ in range(n):
        frames.labels("ws").inc()
        nbytes.labels("ws").inc(size)
    prom = (time.process_time() - start) / n * 1e9
    start = time.process_time()
    for _ in range(n):
        pass
    empty = (time.process_time() - start) / n * 1e9
    return plain - empty, prom - empty


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0, help="audio per session")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rate = args.sessions * 10  # chunks per second at 100 ms chunks
    configure_logging(LogSettings(level="warning"))
    print(f"{args.sessions} sessions x {args.seconds:g} s of 100 ms chunks, best of {args.repeat}")
    results: dict[str, float] = {}
    configs = (("stage timing off", 0), ("1 session in 8 (default)", 8), ("every session", 1))
    runs: dict[str, list[float]] = {label: [] for label, _ in configs}
    for _ in range(args.repeat):  # interleaved, so load from other processes hits all alike
        for label, every in configs:
            runs[label].append(asyncio.run(feed_cost(args.sessions, args.seconds, every)))
    for label, _every in configs:
        best = results[label] = min(runs[label])
        print(
            f"  feed, {label:<25} {best:8.1f} µs   ({best * rate / 1e6 * 100:5.1f} % of a core "
            f"at {rate} chunks/s)"
        )
    base = results["stage timing off"]
    for label in ("1 session in 8 (default)", "every session"):
        extra = results[label] - base
        print(f"  stage timing, {label:<25} {extra:+6.2f} µs per feed ({extra / base * 100:+.1f} %)")
    plain, prom = counter_cost()
    print(
        f"  always-on counters: {plain:6.1f} ns per feed as plain ints, "
        f"{prom:6.1f} ns with prometheus_client Counter.inc() "
        f"({plain * rate / 1e7:.3f} % vs {prom * rate / 1e7:.3f} % of a core)"
    )


if __name__ == "__main__":
    main()
