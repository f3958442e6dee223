#!/usr/bin/env python3
"""End-to-end latency with whisper: end of speech → ``transcript.final``, against the engine's own time.

    python tests/perf/bench_latency.py [--repeat 2] [--quick]

A hub (``asrhub serve``, default provider whisper, the bundled tiny.en) runs in its own process;
tests/perf/loadgen.py streams each English fixture utterance (room tone around it) at real-time
pace in 100 ms PCM16 frames, one session at a time, with partials on (the default config) and
off. Per utterance:

- ``e2e``: receive(transcript.final) − send(frame holding the true end of speech);
- ``VAD lag``: ``vad.speech_ended``'s t (end of the last voiced frame) − the true end;
- ``inference``: after the run, the same stream span (the final's start..end) decoded by
  faster-whisper directly in this process, with the provider's call (tests/perf/whisper_direct.py);
- ``added`` = e2e − silence_ms − inference: what the hub adds beyond the hangover the client asked
  for and the engine's own time (VAD framing and 100 ms client framing included).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import whisper_direct
from common import RATE, SPEECH_FIXTURES, Server, Table, percentile, print_tables, run_loadgen, stream_audio

HANGOVER_MS = 500
LEAD, TAIL = 0.5, 1.5


def scrape(server: Server, name: str) -> float:
    """Sum of one metric's samples (all label sets) from the hub's /metrics, 0 when absent."""
    try:
        with urllib.request.urlopen(f"{server.http}/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([-+0-9.eEinfNa]+)$", line)
        if m:
            total += float(m.group(2))
    return total


def run(
    quick: bool = False, repeat: int = 1, progress: bool = True, fixtures: tuple[str, ...] | None = None
) -> tuple[list[Table], list[dict[str, Any]]]:
    fixtures = fixtures or (SPEECH_FIXTURES[:2] if quick else SPEECH_FIXTURES)
    configs = {"partials on (default)": {"partials": True}}
    if not quick:
        configs["partials off"] = {"partials": False}
    rows: list[dict[str, Any]] = []
    with Server("hub", provider="whisper") as server:
        run_loadgen(
            ["--url", server.url, "--sessions", "1", "--pace", "fast", "--fixture", fixtures[0]]
        )  # warm-up
        for label, extra in configs.items():
            config = {"vad": {"silence_ms": HANGOVER_MS}, **extra}
            inf_sum0 = scrape(server, "asrhub_inference_seconds_sum")
            inf_n0 = scrape(server, "asrhub_inference_seconds_count")
            for _ in range(repeat):
                for fixture in fixtures:
                    result = run_loadgen(
                        [
                            "--url",
                            server.url,
                            "--sessions",
                            "1",
                            "--fixture",
                            fixture,
                            "--lead",
                            str(LEAD),
                            "--tail",
                            str(TAIL),
                            "--config",
                            json.dumps(config),
                            "--hangover-ms",
                            str(HANGOVER_MS),
                        ]
                    )
                    c = result["clients"][0]
                    finals = [f for f in c["finals"] if f["text"].strip()]
                    row: dict[str, Any] = {"config": label, "fixture": fixture, "error": c["error"]}
                    if finals and "ended_t" in c:
                        f = finals[-1]
                        row.update(
                            e2e_ms=f["e2e_ms"],
                            start=f["start"],
                            end=f["end"],
                            text=f["text"],
                            vad_lag_ms=1000 * (c["ended_t"] - result["speech_end_s"]),
                            after_ended_ms=1000 * (f["recv"] - c["ended_recv"]),
                        )
                    rows.append(row)
                    if progress:
                        print(
                            f"  latency {label} {fixture}: e2e {row.get('e2e_ms', float('nan')):.0f} ms "
                            f"{row.get('text', row['error'])!r}",
                            file=sys.stderr,
                            flush=True,
                        )
            n = scrape(server, "asrhub_inference_seconds_count") - inf_n0
            hub_inf = (scrape(server, "asrhub_inference_seconds_sum") - inf_sum0) / n if n else float("nan")
            for row in rows:
                if row["config"] == label:
                    row["hub_inference_mean_ms"] = 1000 * hub_inf
                    row["hub_inference_calls"] = n
    # the engine alone, on the same spans, in this process (the hub is stopped: same idle machine)
    model = whisper_direct.load_model()
    audio: dict[str, np.ndarray] = {}
    for fixture in fixtures:
        a = stream_audio(fixture, lead_s=LEAD, tail_s=TAIL)
        audio[fixture] = np.frombuffer(a.pcm, "<i2").astype(np.float32) / 32768.0
    whisper_direct.timed(model, audio[fixtures[0]][: 3 * RATE])  # warm-up
    for row in rows:
        if "start" not in row:
            continue
        x = audio[row["fixture"]][int(row["start"] * RATE) : int(row["end"] * RATE)]
        row["inference_ms"] = 1000 * whisper_direct.timed(model, x, repeat=2)[0]
        row["added_ms"] = row["e2e_ms"] - HANGOVER_MS - row["inference_ms"]
    return [summarize(rows)], rows


def summarize(rows: list[dict[str, Any]]) -> Table:
    cols = [
        "config",
        "utterances",
        "e2e p50 ms",
        "e2e p95 ms",
        "VAD lag p50 ms",
        "ended→final p50 ms",
        "inference p50 ms",
        "hub inference mean ms",
        "added p50 ms",
        "added p95 ms",
        "errors",
    ]
    table = Table(
        "End-to-end latency with whisper (tiny.en int8, beam 5): end of speech → transcript.final", cols
    )
    for label in dict.fromkeys(r["config"] for r in rows):
        rs = [r for r in rows if r["config"] == label]
        ok = [r for r in rs if "added_ms" in r]

        def p(key: str, q: float, ok: list[dict[str, Any]] = ok) -> float:
            return percentile([r[key] for r in ok], q)

        table.rows.append(
            [
                label,
                len(ok),
                p("e2e_ms", 50),
                p("e2e_ms", 95),
                p("vad_lag_ms", 50),
                p("after_ended_ms", 50),
                p("inference_ms", 50),
                rs[0].get("hub_inference_mean_ms", float("nan")),
                p("added_ms", 50),
                p("added_ms", 95),
                len(rs) - len(ok),
            ]
        )
    table.notes.append(
        f"silence_ms (hangover) = {HANGOVER_MS}; added = e2e − hangover − inference (direct faster-whisper "
        "on the same span, best of 2); VAD lag = vad.speech_ended t (end of the last voiced frame) − true end"
    )
    table.notes.append(
        "hub inference mean = asrhub_inference_seconds sum/count from /metrics over the run "
        "(partial decodes included when partials are on)"
    )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t = time.monotonic()
    tables, rows = run(args.quick, args.repeat)
    print_tables(tables)
    print(f"({time.monotonic() - t:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
