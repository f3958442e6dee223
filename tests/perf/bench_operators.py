"""Per-chunk cost of the audio operators, on the calling thread (the event loop in the hub).

Run: ``python tests/perf/bench_operators.py [--seconds 60]``. Feeds 100 ms chunks of real speech
with pauses (tests/fixtures/silences.wav, looped) through each operator alone and through the
whole chain, and prints mean / p50 / p99 µs per chunk. The budget this is meant to show: 1000
sessions × 10 chunks/s on 2 cores with p99 < 50 ms leaves well under ~100 µs per chunk per
operator.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import reactivex
from reactivex.subject import Subject

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asrhub.config import AudioFormat
from asrhub.frames import AudioChunk, Frame, RawAudio
from asrhub.operators.decode import decode
from asrhub.operators.resample import resample
from asrhub.operators.segment import segment
from asrhub.operators.vad_gate import vad_gate
from asrhub.plugin import Operator
from tests.audio_utils import encode, fixture, load_wav, pcm16_bytes
from tests.audio_utils import resample as resample_signal


def chunks(x: np.ndarray, rate: int, n: int) -> list[AudioChunk]:
    size = rate // 10
    return [AudioChunk(x[(i * size) % (len(x) - size) :][:size], rate, i * size / rate, i) for i in range(n)]


def bench(name: str, op: Operator, frames: Sequence[Frame]) -> None:
    src: Subject[Frame] = Subject()
    src.pipe(op).subscribe(lambda _f: None)
    times = np.empty(len(frames))
    clock = time.perf_counter_ns
    for i, f in enumerate(frames):
        t = clock()
        src.on_next(f)
        times[i] = clock() - t
    src.on_completed()
    us = times / 1000
    print(f"{name:<44} {us.mean():8.1f} {np.percentile(us, 50):8.1f} {np.percentile(us, 99):8.1f}")


def bench_thread_decoder(fmt: str, x: np.ndarray, rate: int) -> None:
    data = encode(x, rate, fmt)

    async def main() -> float:
        src: Subject[Frame] = Subject()
        done = asyncio.Event()
        src.pipe(decode(AudioFormat(encoding=fmt))).subscribe(on_completed=done.set)  # type: ignore[arg-type]
        t = time.perf_counter()
        for i in range(0, len(data), 4000):
            src.on_next(RawAudio(data[i : i + 4000]))
        src.on_completed()
        await done.wait()
        return time.perf_counter() - t

    wall = asyncio.run(main())
    per_chunk = wall / (len(x) / rate * 10) * 1e6
    print(f"{'decode ' + fmt + ' (decoder thread, per 100 ms)':<44} {per_chunk:8.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="stream seconds per run")
    args = parser.parse_args(argv)
    n = int(args.seconds * 10)
    x, rate = load_wav(fixture("silences.wav"))
    x48, x44 = resample_signal(x, rate, 48000), resample_signal(x, rate, 44100)
    pcm = pcm16_bytes(x)
    raw = [RawAudio(pcm[(i * 3200) % (len(pcm) - 3200) :][:3200]) for i in range(n)]
    c16, c48, c44 = chunks(x, rate, n), chunks(x48, 48000, n), chunks(x44, 44100, n)
    gated: list[Frame] = []
    reactivex.from_iterable(c16).pipe(vad_gate()).subscribe(gated.append)
    print(f"{'operator (100 ms chunks)':<44} {'mean µs':>8} {'p50':>8} {'p99':>8}")
    bench("decode pcm_s16le 16 kHz", decode(AudioFormat()), raw)
    bench("resample 16 kHz → 16 kHz (pass-through)", resample(16000), c16)
    bench("resample 48 kHz → 16 kHz", resample(16000), c48)
    bench("resample 44.1 kHz → 16 kHz", resample(16000), c44)
    bench("vad_gate (speech with pauses)", vad_gate(), c16)
    bench(
        "segment (after vad_gate, partials 1 s)", segment(max_s=30, min_s=0.25, partial_interval_s=1.0), gated
    )
    chain: Callable[..., Operator] = reactivex.compose
    bench(
        "decode → resample → vad_gate → segment",
        chain(
            decode(AudioFormat()),
            resample(16000),
            vad_gate(),
            segment(max_s=30, min_s=0.25, partial_interval_s=1.0),
        ),
        raw,
    )
    for fmt in ("webm", "mp3"):
        bench_thread_decoder(fmt, x, rate)


if __name__ == "__main__":
    main()
