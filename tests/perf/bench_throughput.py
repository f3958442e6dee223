#!/usr/bin/env python3
"""Throughput with whisper: K concurrent sessions streaming as fast as the hub takes audio.

    python tests/perf/bench_throughput.py [--k 1 2 4 8] [--quick]

Each session streams the five English fixture utterances back to back (room tone between them)
with no pacing — each send awaits the socket, so the hub's backpressure sets the pace — then
``session.end`` and waits for ``session.closed`` (all finals flushed). Throughput = seconds of
fixture audio transcribed per wall second (first frame sent → last session closed). The baseline,
in the same run: the same five clips transcribed one after another by faster-whisper directly in
this process (tests/perf/whisper_direct.py, the provider's call), before the hub starts.
Partials are off: shed partial decodes would only add noise to a throughput number.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import whisper_direct
from common import SPEECH_FIXTURES, Sampler, Server, Table, print_tables, run_loadgen, stream_audio

from tests import audio_utils as au

KS = (1, 2, 4, 8)
QUICK_KS = (1, 2)
CONFIG = {"partials": False}


def direct_baseline(fixtures: tuple[str, ...]) -> dict[str, float]:
    model = whisper_direct.load_model()
    clips = [au.load_wav(au.fixture(f))[0] for f in fixtures]
    whisper_direct.timed(model, clips[0])  # warm-up
    t = time.perf_counter()
    for clip in clips:
        whisper_direct.transcribe(model, clip)
    wall = time.perf_counter() - t
    audio_s = sum(len(c) for c in clips) / 16_000
    del model
    return {"audio_s": audio_s, "wall_s": wall, "xrt": audio_s / wall}


def run(
    ks: tuple[int, ...] = KS,
    quick: bool = False,
    progress: bool = True,
    fixtures: tuple[str, ...] | None = None,
    baseline: bool = True,
) -> tuple[list[Table], list[dict[str, Any]]]:
    fixtures = fixtures or (SPEECH_FIXTURES[:3] if quick else SPEECH_FIXTURES)
    fixture_arg = ",".join(fixtures)
    audio = stream_audio(fixture_arg, lead_s=0.3, tail_s=1.0, gap_s=0.6)
    nan = float("nan")
    base = direct_baseline(fixtures) if baseline else {"audio_s": audio.speech_s, "wall_s": nan, "xrt": nan}
    base_before = base["xrt"]
    if progress:
        print(f"  throughput direct: {base['xrt']:.1f}x real time", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    with Server("hub", provider="whisper") as server:
        run_loadgen(
            ["--url", server.url, "--sessions", "1", "--pace", "fast", "--fixture", fixtures[0]]
        )  # warm-up
        for k in ks:
            with Sampler(server.ps, interval=0.5) as sampler:
                result = run_loadgen(
                    [
                        "--url",
                        server.url,
                        "--sessions",
                        str(k),
                        "--stagger",
                        "0",
                        "--pace",
                        "fast",
                        "--fixture",
                        fixture_arg,
                        "--lead",
                        "0.3",
                        "--tail",
                        "1.0",
                        "--gap",
                        "0.6",
                        "--config",
                        json.dumps(CONFIG),
                        "--timeout",
                        "600",
                    ],
                    timeout=900,
                )
            clients = result["clients"]
            ok = [c for c in clients if c["error"] is None]
            t0 = min(c["t_first"] for c in clients)
            t1 = max(c["t_closed"] for c in ok) if ok else float("nan")
            cpu, rss = sampler.window(t0, t1)
            finals = sum(len([f for f in c["finals"] if f["text"].strip()]) for c in ok)
            wall = t1 - t0
            row = {
                "k": k,
                "ok": len(ok),
                "finals": finals,
                "expected_finals": k * len(fixtures),
                "audio_s": k * audio.speech_s,
                "wall_s": wall,
                "xrt": k * audio.speech_s / wall,
                "cpu": cpu,
                "rss_mb": rss / 2**20,
                "errors": [c["error"] for c in clients if c["error"]][:3],
            }
            row["ratio"] = row["xrt"] / base["xrt"]
            rows.append(row)
            if progress:
                print(
                    f"  throughput K={k}: {row['xrt']:.1f}x real time ({row['ratio']:.2f} of direct)",
                    file=sys.stderr,
                    flush=True,
                )
    # again after the hub runs: the two bracket the machine's state during the run
    after = direct_baseline(fixtures) if baseline else base
    base = {"audio_s": base["audio_s"], "wall_s": (base["wall_s"] + after["wall_s"]) / 2}
    base["xrt"] = base["audio_s"] / base["wall_s"]
    for r in rows:
        r["ratio"] = r["xrt"] / base["xrt"]
    cols = [
        "K sessions",
        "audio s",
        "wall s",
        "audio s / wall s",
        "vs direct sequential",
        "finals",
        "hub CPU %",
        "hub RSS MB",
        "errors",
    ]
    table = Table("Throughput with whisper (tiny.en int8, beam 5), unpaced streaming", cols)
    table.rows.append(
        [
            "direct faster-whisper, sequential",
            base["audio_s"],
            base["wall_s"],
            base["xrt"],
            1.0,
            len(fixtures),
            "–",
            "–",
            0,
        ]
    )
    for r in rows:
        table.rows.append(
            [
                r["k"],
                r["audio_s"],
                r["wall_s"],
                r["xrt"],
                r["ratio"],
                f"{r['finals']}/{r['expected_finals']}",
                r["cpu"],
                r["rss_mb"],
                len(r["errors"]),
            ]
        )
        if r["errors"]:
            table.notes.append(f"K={r['k']} errors: {'; '.join(r['errors'])}")
    table.notes.append(
        f"direct = mean of a sequential pass before the hub started ({base_before:.2f}x) and one after "
        f"it stopped ({after['xrt']:.2f}x)"
    )
    table.notes.append(
        f"audio = {len(fixtures)} English fixture clips per session ({audio.speech_s:.1f} s); "
        "the hub streams them with room tone between and decodes what its VAD cuts"
    )
    return [table], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    ks = tuple(args.k or (QUICK_KS if args.quick else KS))
    tables, rows = run(ks, args.quick)
    print_tables(tables)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
