"""How fast ``asrhub replay`` re-runs a session: records one in-process session on the real
tiny.en engine (two utterances of the test fixtures, 7.8 s of 16 kHz PCM16, partials on), then
replays its trace N times and prints the audio length, the replay time and the speed-up.

    .venv/bin/python scripts/bench_replay.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import wave
from pathlib import Path

from asrhub.api import open_hub
from asrhub.settings.schema import Settings, TraceSettings
from asrhub.trace.recorder import Tracer
from asrhub.trace.replay import load, replay
from asrhub.wiring import build_pipeline

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"
QUIET = b"\0\0" * 16_000


def pcm(name: str) -> bytes:
    with wave.open(str(FIXTURES / name), "rb") as w:
        return w.readframes(w.getnframes())


async def main(runs: int) -> None:
    audio = pcm("weather_question.wav") + QUIET + pcm("quick_fox.wav") + QUIET
    with tempfile.TemporaryDirectory() as folder:
        async with open_hub(Settings(trace=TraceSettings(dir=folder))) as hub:
            session = await hub.open_async({"trace": True, "language": "en"})
            for i in range(0, len(audio), 3200):
                await session.feed(audio[i : i + 3200])
            await session.end()
            assert isinstance(hub.tracing, Tracer)
            await hub.tracing.flushed()
        data = (Path(folder) / f"{session.id}.trace").read_bytes()
    trace = load(data)
    await replay(trace, build_pipeline)  # first run: VAD and filters load
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await replay(trace, build_pipeline)
        times.append(time.perf_counter() - start)
    seconds = len(trace.audio()) / 32_000
    best, median = min(times), statistics.median(times)
    print(f"trace {len(data)} bytes, {seconds:.2f} s of audio, {len(trace.events)} events")
    print(f"replay: best {best * 1000:.1f} ms, median {median * 1000:.1f} ms of {runs} runs")
    print(f"speed: {seconds / median:.0f}x real time (median)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 10))
