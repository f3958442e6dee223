#!/usr/bin/env python3
"""What usage metering (issue 27) costs: CPU per audio frame, and Redis writes per session-second.

    python tests/perf/bench_metering.py [--sessions 300] [--repeat 3] [--redis-sessions 100] [--seconds 5]

1. CPU: N VAD-only sessions of one ``Hub`` (provider ``none``: decode → resample →
   meter_audio → vad_gate), fed the scale benchmark's 100 ms PCM16 frames round robin, with the
   ``meter_audio`` stage and without it (N sessions of each in the same hub, the stage left out
   of one half's chain, fed each frame in turn), best of ``--repeat``; process time, so other
   load hardly moves it. Sessions
   carry an API key with a daily quota (the costlier path: the meter checks what remains).
2. Redis: a hub in cluster mode on a throw-away ``redis-server``; ``--redis-sessions`` sessions
   over 1, 10 and 100 keys are fed one second of audio per wall second for ``--seconds``; the
   Redis commands the usage meter sent (``INFO commandstats``) and its pipelines, per
   session-second of audio.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Table, print_tables, stream_audio

FRAME = 3200  # bytes: 100 ms of 16 kHz PCM16
KEY_IDS = [f"key-{i:012x}" for i in range(100)]
METER_COMMANDS = ("hincrbyfloat", "hincrby", "expire", "hget")


def frames() -> list[bytes]:
    pcm = stream_audio().pcm
    return [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]


def settings(**cluster: Any) -> Any:
    from asrhub.config import KeyLimits, Limits
    from asrhub.settings.schema import ClusterSettings, Settings

    limits = Limits(
        max_sessions=10_000,
        max_sessions_per_key=10_000,
        key_audio_seconds_per_day=1e9,
        per_key={KEY_IDS[0]: KeyLimits(audio_seconds_per_day=1e9)},
    )
    return Settings(default_provider="none", limits=limits, cluster=ClusterSettings(**cluster))


async def cpu_pass(n: int, fr: list[bytes]) -> tuple[float, float]:
    """(µs per frame without, with) the meter: one hub, n sessions of each kind, fed the same
    frame in turn (without first, then with), each kind's process time summed apart."""
    from asrhub.wiring import build_hub, build_pipeline

    hub = build_hub(settings())
    metered = hub.pipeline_factory
    await hub.start()
    hub.pipeline_factory = lambda ctx: build_pipeline(dataclasses.replace(ctx, usage=None))
    plain = [hub.open({"provider": "none"}, key=KEY_IDS[0]) for _ in range(n)]
    hub.pipeline_factory = metered
    with_meter = [hub.open({"provider": "none"}, key=KEY_IDS[0]) for _ in range(n)]
    for s in (*plain, *with_meter):
        s.events.subscribe(lambda _e: None)
    spent = [0.0, 0.0]
    for f in fr:
        for k, group in enumerate((plain, with_meter)):
            t = time.process_time()
            for s in group:
                await s.feed(f)
            spent[k] += time.process_time() - t
    for s in (*plain, *with_meter):
        s.close()
    await hub.shutdown(grace_s=0.1)
    return spent[0] / (n * len(fr)), spent[1] / (n * len(fr))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def redis_pass(port: int, n: int, keys: int, seconds: int, fr: list[bytes]) -> dict[str, float]:
    from redis.asyncio import Redis

    from asrhub.wiring import build_hub

    url = f"redis://127.0.0.1:{port}/0"
    probe = Redis.from_url(url)
    await probe.flushall()
    await probe.config_resetstat()
    hub = build_hub(settings(redis_url=url, key_prefix=f"bench{keys}"))
    await hub.start()
    sessions = [await hub.open_async({"provider": "none"}, key=KEY_IDS[i % keys]) for i in range(n)]
    for s in sessions:
        s.events.subscribe(lambda _e: None)
    stats0 = await probe.info("commandstats")
    flushes0 = hub.usage.flushes
    start = time.monotonic()
    fed = 0
    for second in range(seconds):
        for f in fr[(second * 10) % (len(fr) - 10) :][:10]:  # one second of audio each
            for s in sessions:
                await s.feed(f)
        fed += n
        await asyncio.sleep(max(0.0, start + second + 1 - time.monotonic()))
    await hub.usage.stop()  # its last flush carries the last second's counts
    wall = time.monotonic() - start
    stats1 = await probe.info("commandstats")
    flushes = hub.usage.flushes - flushes0
    for s in sessions:
        s.close()
    await hub.shutdown(grace_s=0.5)
    await probe.aclose()

    def calls(stats: dict[str, Any], name: str) -> int:
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))

    commands = sum(calls(stats1, c) - calls(stats0, c) for c in METER_COMMANDS)
    return {"commands": commands, "pipelines": flushes, "session_seconds": fed, "wall": wall}


def run(sessions: int, repeat: int, redis_sessions: int, seconds: int) -> list[Table]:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    fr = frames()
    passes = [asyncio.run(cpu_pass(sessions, fr)) for _ in range(repeat)]
    without, with_meter = [p[0] for p in passes], [p[1] for p in passes]
    before, after = min(without), min(with_meter)
    t1 = Table(
        f"CPU per 100 ms frame, {sessions} VAD-only sessions with a key and a quota (best of {repeat})",
        ["chain", "µs / frame", "metering µs / frame", "share"],
    )
    t1.rows.append(["decode → resample → vad_gate (no meter_audio)", before * 1e6, 0.0, 0.0])
    t1.rows.append(["… → meter_audio → …", after * 1e6, (after - before) * 1e6, (after - before) / before])
    t1.notes.append(
        "process time; every pass: "
        + ", ".join(f"{a * 1e6:.1f}/{b * 1e6:.1f}" for a, b in zip(without, with_meter, strict=True))
        + " µs (without/with)"
    )
    t2 = Table(
        f"Redis traffic of the usage meter (cluster): {redis_sessions} sessions at real time, {seconds} s",
        [
            "keys",
            "session-seconds",
            "meter commands",
            "pipelines",
            "commands / session-second",
            "pipelines / s",
        ],
    )
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    server = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        for keys in (1, 10, 100):
            r = asyncio.run(redis_pass(port, redis_sessions, keys, seconds, fr))
            t2.rows.append(
                [
                    keys,
                    r["session_seconds"],
                    r["commands"],
                    r["pipelines"],
                    r["commands"] / r["session_seconds"],
                    r["pipelines"] / r["wall"],
                ]
            )
    finally:
        server.kill()
        server.wait(10)
    t2.notes.append(
        "meter commands: HINCRBYFLOAT/HINCRBY on the day and total hashes, EXPIRE, HGET (INFO commandstats);"
        " leases and resume records are not counted"
    )
    return [t1, t2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--redis-sessions", type=int, default=100)
    ap.add_argument("--seconds", type=int, default=5)
    args = ap.parse_args()
    print_tables(run(args.sessions, args.repeat, args.redis_sessions, args.seconds))


if __name__ == "__main__":
    main()
