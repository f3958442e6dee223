#!/usr/bin/env python3
"""What tracing costs: per audio frame, and per utterance.

    uv run --frozen python tests/perf/bench_telemetry.py [--sessions 300] [--seconds 5] [--repeat 3]

Per frame: opens N real sessions (provider ``none``: decode → resample → vad_gate), feeds each
the same speech-and-silence fixture in 100 ms PCM16 chunks round-robin, and prints the mean CPU
time (process_time: every thread of this process, the SDK's export thread included) of one
``feed``, in three set-ups, each in a fresh process:

* ``off``: ``[telemetry] enabled = false`` and OpenTelemetry never imported (as without the
  ``otel`` extra; checked);
* ``disabled``: the extra's modules imported, tracing off (installed but disabled);
* ``on``: tracing on, every session sampled, spans exported over OTLP/HTTP to a receiver in
  another process (tests/telemetry/collector.py), so the export's CPU counts here and the
  receiver's does not.

Per utterance: the hooks one final goes through (an ``utterance`` span, an ``engine.call``
span, the trace context injected into the engine's clip, both ended and exported) — with
tracing off and on, N times, CPU per utterance. Not a pytest module.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def utterance_cost(n: int) -> float:
    """CPU µs per utterance of the per-utterance hooks (spans ended and exported)."""
    from asrhub import telemetry
    from asrhub.telemetry.setup import flush

    session = telemetry.session_span("bench", "bench", "none")
    gc.collect()
    start = time.process_time()
    for i in range(n):
        with telemetry.utterance(session, i, 0.0, 2.0), telemetry.engine_call("whisper", 1, 2.0):
            telemetry.inject()
        if i % 500 == 499:
            flush()  # the SDK's queue holds 2048 spans: a faster burst would drop (and not export) some
    flush()
    elapsed = time.process_time() - start
    telemetry.end_session(session, "end")
    return elapsed / n * 1e6


def child(mode: str, endpoint: str, sessions: int, seconds: float, utterances: int) -> None:
    from asrhub import telemetry
    from asrhub.settings.schema import MetricsSettings, TelemetrySettings
    from tests.perf.bench_metrics import feed_cost  # the per-frame measure, the hub's defaults

    if mode == "disabled":
        import opentelemetry.exporter.otlp.proto.http.trace_exporter
        import opentelemetry.sdk.trace  # noqa: F401
    telemetry.install(TelemetrySettings(enabled=mode == "on", endpoint=endpoint))
    frame = asyncio.run(feed_cost(sessions, seconds, MetricsSettings().operator_sample))
    utterance = utterance_cost(utterances)
    telemetry.shutdown()
    imported = any(m.startswith("opentelemetry") for m in sys.modules)
    print(json.dumps({"mode": mode, "frame_us": frame, "utterance_us": utterance, "otel_imported": imported}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--utterances", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.endpoint, args.sessions, args.seconds, args.utterances)
        return
    collector = subprocess.Popen(
        [sys.executable, "-m", "tests.telemetry.collector"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert collector.stdout is not None
    endpoint = collector.stdout.readline().strip()
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for _ in range(args.repeat):
            for mode in ("off", "disabled", "on"):
                cmd = [sys.executable, __file__, "--child", mode, "--endpoint", endpoint]
                cmd += ["--sessions", str(args.sessions), "--seconds", str(args.seconds)]
                cmd += ["--utterances", str(args.utterances)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                results.setdefault(mode, []).append(json.loads(out.strip().splitlines()[-1]))
    finally:
        collector.terminate()
        received = collector.communicate(timeout=30)[0].strip()
    print(f"sessions {args.sessions}, {args.seconds:g} s each, 100 ms frames; load {os.getloadavg()[0]:.1f}")
    print(f"{'mode':<10}{'µs/frame (min, runs)':<36}{'µs/utterance (min)':<20}opentelemetry imported")
    for mode, runs in results.items():
        frames = ", ".join(f"{r['frame_us']:.2f}" for r in runs)
        best = min(r["frame_us"] for r in runs)
        utt = min(r["utterance_us"] for r in runs)
        print(f"{mode:<10}{best:<8.2f}({frames}){'':<4}{utt:<20.1f}{runs[0]['otel_imported']}")
    runs = len(results.get("on", []))
    print(f"spans the receiver got: {received} (expected {runs * (args.sessions + 2 * args.utterances + 1)})")


if __name__ == "__main__":
    main()
