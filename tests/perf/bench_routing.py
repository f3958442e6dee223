"""The router's cost per utterance (issue 28): what ``provider: "auto"`` adds before an
utterance's engine call, against the call itself.

Run: ``python tests/perf/bench_routing.py [--routes 5000] [--identify 10]``. Real engines
(tiny.en, the multilingual base, Vosk Korean), a hub with the default ``[routing]`` table.
Prints mean / p50 / p99 wall µs (and this thread's CPU µs) of

* a route with the client's language hint (table lookup, policy, breakers, load: pure Python),
* a route of a session whose identified language is kept (the same plus the cache),
* a first utterance's language identification (whisper base's ``detect_language`` on the
  3.4 s ``quick_fox.wav``, no decode) — paid once per session while it is sure,

then, for scale, tiny.en's final decode of the same utterance through the hub, and the load
(``uptime``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asrhub.hub import Hub
from asrhub.providers.vosk import VoskProvider
from asrhub.providers.whisper import WhisperProvider
from asrhub.settings.schema import Settings
from asrhub.wiring import build_pipeline, build_router
from tests.audio_utils import fixture, load_wav


def row(name: str, wall: list[float], cpu: list[float]) -> str:
    wall_us = sorted(w * 1e6 for w in wall)
    p99 = wall_us[min(len(wall_us) - 1, int(0.99 * len(wall_us)))]
    return (
        f"| {name} | {len(wall)} | {statistics.fmean(wall_us):,.1f} | {statistics.median(wall_us):,.1f} "
        f"| {p99:,.1f} | {statistics.fmean(cpu) * 1e6:,.1f} |"
    )


async def timed(n: int, call: object) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.thread_time()
        await call()  # type: ignore[operator]
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return wall, cpu


async def main(routes: int, identify: int) -> None:
    whisper, vosk = WhisperProvider({"preload": True}), VoskProvider()
    await whisper.start()
    await vosk.start()
    hub = Hub(providers={"whisper": whisper, "vosk": vosk}, pipeline_factory=build_pipeline)
    hub.router = router = build_router(hub, Settings())
    samples, _ = load_wav(fixture("quick_fox.wav"))
    hinted = hub.resolve_config({"provider": "auto", "language": "en"})
    free = hub.resolve_config({"provider": "auto"})
    session = router.session(None)
    await session.route(samples, free)  # identified once: kept from here on
    assert session.language.kept is not None

    print(f"load before: {os.getloadavg()[0]:.2f}")
    print("| step | n | mean µs | p50 µs | p99 µs | CPU µs (mean) |")
    print("|---|---|---|---|---|---|")
    steps = [
        ("route, language hint", routes, lambda: router.session(None).route(samples, hinted)),
        ("route, session's kept language", routes, lambda: session.route(samples, free)),
        ("identification (base, 1st utterance)", identify, lambda: router.session(None).route(samples, free)),
        ("tiny.en final decode (for scale)", identify, lambda: whisper.transcribe(samples, language="en")),
    ]
    for name, n, call in steps:
        print(row(name, *await timed(n, call)))
    print(f"load after: {os.getloadavg()[0]:.2f}")
    await hub.breakers.close()
    await vosk.close()
    await whisper.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--routes", type=int, default=5000)
    parser.add_argument("--identify", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.routes, args.identify))
