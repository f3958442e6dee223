"""Multichannel cost (issue 27 item 2): one live session of real stereo audio (two recordings,
tests/stereo_audio.py) through the whole chain (decode, VAD, faster-whisper tiny.en, formatting)
in process, fed as fast as the session takes it: mono (channel 0 alone), stereo mixed to mono
(``multichannel`` off) and stereo with ``multichannel`` (one chain per channel). Prints the
process CPU seconds (every thread: the engine's too), per channel, the wall time and the delay
from ``session.end`` to ``session.closed`` (the last final's wait), and the machine load.

    .venv/bin/python tests/perf/bench_multichannel.py --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asrhub.frames import FinalTranscript
from asrhub.wiring import build_hub
from tests.stereo_audio import stereo_pcm
from tests.transports.conftest import make_settings

FRAME_S = 0.1


async def one(hub: object, pcm: bytes, channels: int, multichannel: bool) -> tuple[float, float, float, int]:
    audio = {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": channels}
    session = await hub.open_async({"language": "en", "audio": audio, "multichannel": multichannel})  # type: ignore[attr-defined]
    finals: list[FinalTranscript] = []
    watch = session.events.subscribe(lambda e: finals.append(e) if isinstance(e, FinalTranscript) else None)
    step = int(16_000 * FRAME_S) * 2 * channels
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(pcm), step):
        await session.feed(pcm[i : i + step])
    t_end = time.perf_counter()
    await session.end()
    t1 = time.perf_counter()
    watch.dispose()
    return time.process_time() - cpu0, t1 - t0, t1 - t_end, len(finals)


async def run(repeat: int) -> list[tuple[str, int, float, float, float, float]]:
    hub = build_hub(make_settings())
    await hub.start()
    stereo = stereo_pcm()
    left = np.frombuffer(stereo, "<i2").reshape(-1, 2)[:, 0].copy().tobytes()
    cases = [
        ("mono (channel 0 alone)", left, 1, False),
        ("stereo, mixed", stereo, 2, False),
        ("stereo, multichannel", stereo, 2, True),
    ]
    rows = []
    try:
        await one(hub, left, 1, False)  # warm-up: the model's first call
        for name, pcm, channels, multi in cases:
            runs = [await one(hub, pcm, channels, multi) for _ in range(repeat)]
            cpu = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            tail = statistics.median(r[2] for r in runs)
            pipelines = channels if multi else 1
            rows.append((name, runs[0][3], cpu, cpu / pipelines, wall, tail))
    finally:
        await hub.shutdown(5.0)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    audio_s = len(stereo_pcm()) / (16_000 * 2 * 2)
    print(
        f"audio: {audio_s:.2f} s per channel; {os.cpu_count()} cores;",
        subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
    )
    rows = asyncio.run(run(args.repeat))
    print("| case | finals | CPU s (median) | CPU s per pipeline | wall s | end → closed s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, finals, cpu, per, wall, tail in rows:
        print(f"| {name} | {finals} | {cpu:.2f} | {per:.2f} | {wall:.2f} | {tail:.2f} |")
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
