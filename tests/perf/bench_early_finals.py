#!/usr/bin/env python3
"""Early finals: end of speech → final with the speculative decode on and off, and the CPU it
wastes on pauses where speech resumed.

    python tests/perf/bench_early_finals.py [--utterances 5] [--repeat 2] [--pauses]

One in-process hub (whisper tiny.en, one worker). A live session streams the English fixture
utterances at real-time pace (100 ms PCM16 frames, 1.5 s of room tone after each; the
fixtures' own commas and breaths are the pauses where speech resumes). Per run: the latency of
each final (receive − send of the frame holding the true end of speech), the process CPU time,
and the session's speculative decodes (started / used / dropped). ``--pauses``: each utterance
is two fixture sentences (their quiet heads and tails cut) joined by 0.35 s of room tone — a
pause longer than ``early_final_ms`` and shorter than the 500 ms hangover, where speech resumes
and the speculative decode is wasted. The load is printed with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from bench_upload_vs_live import RATE, SPEECH, live_audio, live_session, load, stats

from asrhub.config import Limits
from asrhub.hub import Hub
from asrhub.providers.whisper import WhisperProvider
from asrhub.wiring import build_pipeline
from tests import audio_utils as au


def trimmed(name: str) -> np.ndarray:
    x, _ = au.load_wav(au.fixture(name))
    seg = au.fixture_entry(name)["segments"][0]
    return x[int(seg["start"] * RATE) : int(seg["end"] * RATE)]


def paused_audio(n: int) -> tuple[np.ndarray, list[float]]:
    """n utterances, each two sentences with a 0.35 s pause inside; where each one's speech ends."""
    parts, ends, t = [au.room_noise(0.5, seed=1)], [], 0.5
    for i in range(n):
        one, two = trimmed(SPEECH[i % len(SPEECH)]), trimmed(SPEECH[(i + 1) % len(SPEECH)])
        parts += [one, au.room_noise(0.35, seed=10 + i), two, au.room_noise(1.5, seed=20 + i)]
        t += (len(one) + len(two)) / RATE + 0.35
        ends.append(t)
        t += 1.5
    return np.concatenate(parts).astype(np.float32), ends


async def run(utterances: int, repeat: int, pauses: bool) -> None:
    whisper = WhisperProvider({"workers": 1})
    await whisper.start()
    audio, ends = paused_audio(utterances) if pauses else live_audio(utterances)
    proc = psutil.Process()
    try:
        for _ in range(repeat):
            for early_ms in (0, 200):
                hub = Hub(
                    providers={"whisper": whisper},
                    pipeline_factory=build_pipeline,
                    default_provider="whisper",
                    limits=Limits(early_final_ms=early_ms),
                )
                before, cpu0 = load(), proc.cpu_times()
                counts: dict[str, int] = {}
                latencies = await live_session(hub, audio, ends, counts)
                cpu1 = proc.cpu_times()
                cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
                label = f"early_final_ms={early_ms}"
                print(
                    f"{label:>18}: {stats(latencies)}; process CPU {cpu:.1f} s; speculative {counts}"
                    f"  [{before} / after: {load()}]",
                    flush=True,
                )
    finally:
        await whisper.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--utterances", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--pauses", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.utterances, args.repeat, args.pauses))


if __name__ == "__main__":
    main()
