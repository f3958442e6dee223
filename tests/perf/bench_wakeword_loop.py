#!/usr/bin/env python3
"""Event-loop responsiveness while 50 wake-word sessions stream: detection on vs off the loop.

    python tests/perf/bench_wakeword_loop.py [--sessions 50] [--seconds 20]

One in-process hub (provider ``none``, wake word ``hey_jarvis`` on, the real openWakeWord
models). ``--sessions`` sessions stream ``hey_jarvis_weather.wav`` in a loop at real-time pace
(100 ms PCM16 frames). Meanwhile a probe stands in for every *other* session's ``ping``: every
20 ms it schedules a callback and measures how late the loop runs it (what a ping's ``pong``
waits for on a busy loop). Printed: probe lag p50 / p99 / max, and how many frames were sent
late, with the wake word inline on the loop (as before) and in worker threads (now). The load is
printed with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import asrhub.wiring as wiring
from asrhub.config import Limits
from asrhub.hub import Hub
from asrhub.operators import wakeword as ww
from tests import audio_utils as au

RATE, FRAME_S = 16_000, 0.1


async def probe(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + 0.02
        fired: asyncio.Future[float] = loop.create_future()
        loop.call_at(due, _fire, fired, loop)
        lags.append(await fired - due)


def _fire(fired: asyncio.Future[float], loop: asyncio.AbstractEventLoop) -> None:
    if not fired.done():
        fired.set_result(loop.time())


async def stream(hub: Hub, pcm: bytes, seconds: float, late: list[int]) -> None:
    session = hub.open({"provider": "none", "wakeword": {"enabled": True}})
    session.events.subscribe(lambda _e: None)
    step = int(FRAME_S * RATE) * 2
    t0 = time.monotonic()
    for k in range(int(seconds / FRAME_S)):
        delay = t0 + k * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -FRAME_S:
            late[0] += 1
        i = (k * step) % (len(pcm) - step)
        await session.feed(pcm[i : i + step])
    await session.end()


async def run(sessions: int, seconds: float, off_loop: bool) -> str:
    original = ww.wakeword

    def patched(**kw: object) -> object:
        return original(**{**kw, "off_loop": off_loop})  # type: ignore[arg-type]

    wiring_wakeword = ww.wakeword
    ww.wakeword = patched  # type: ignore[assignment]
    try:
        hub = Hub(providers={}, pipeline_factory=wiring.build_pipeline, limits=Limits())
        ww.preload()
        samples, _ = au.load_wav(au.fixture("hey_jarvis_weather.wav"))
        pcm = au.pcm16_bytes(np.tile(samples, 3))
        lags: list[float] = []
        late = [0]
        stop = asyncio.Event()
        prober = asyncio.create_task(probe(stop, lags))
        load0 = psutil.getloadavg()[0]
        await asyncio.gather(*(stream(hub, pcm, seconds, late) for _ in range(sessions)))
        stop.set()
        await prober
        a = np.array(lags[10:]) * 1000
        where = "off the loop" if off_loop else "on the loop "
        p50, p99 = np.percentile(a, 50), np.percentile(a, 99)
        return (
            f"wake word {where}: probe lag p50={p50:.1f} ms p99={p99:.1f} ms max={a.max():.1f} ms; "
            f"frames sent >100 ms late: {late[0]}"
            f"  [load1 {load0:.2f} → {psutil.getloadavg()[0]:.2f}]"
        )
    finally:
        ww.wakeword = wiring_wakeword  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    for off in (False, True):
        print(asyncio.run(run(args.sessions, args.seconds, off)), flush=True)


if __name__ == "__main__":
    main()
