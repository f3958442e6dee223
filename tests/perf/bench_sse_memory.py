#!/usr/bin/env python3
"""Memory left behind by HTTP+SSE sessions in ``asrhub serve`` (issue 16).

    .venv/bin/python tests/perf/bench_sse_memory.py [--sessions 2400] [--mode create|abandon]
                                                    [--rounds 1]

Starts ``asrhub serve`` (idle timeout and resume window 1 s), warms up with 100 sessions, then
runs N sessions 16 at a time — ``create``: POST /v1/sessions, DELETE it; ``abandon``: POST a
session, post 0.3–1.5 s of speech, walk away (the idle timeout ends it) — waits 10 s (every
lingering record expired) and prints the hub's RSS growth per session. Set
``MALLOC_ARENA_MAX=1`` to keep glibc's per-thread arenas out of the figure. ``--rounds R`` runs
the N sessions R times and prints the RSS after each round: a leak grows by the same amount
every round, fragmentation of the allocator's arenas levels off.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.reliability.harness import ServeProcess
from tests.reliability.test_vanishing import no_keepalive, speech_part

NONE = {"config": {"provider": "none"}}


async def cycle(http: aiohttp.ClientSession, base: str, mode: str, rng: random.Random) -> None:
    async with http.post(base + "/v1/sessions", json=NONE) as r:
        sid = (await r.json())["session_id"]
    if mode == "abandon":
        async with http.post(f"{base}/v1/sessions/{sid}/audio", data=speech_part(rng)) as r:
            await r.read()
    else:
        async with http.delete(f"{base}/v1/sessions/{sid}") as r:
            await r.read()


async def run(proc: ServeProcess, n: int, mode: str, rounds: int = 1) -> list[float]:
    """The hub's RSS after the warm-up, then after each round of ``n`` sessions."""
    rng = random.Random(1)
    gate = asyncio.Semaphore(16)

    async def one(http: aiohttp.ClientSession) -> None:
        async with gate:
            await cycle(http, proc.http, mode, rng)

    async with no_keepalive() as http:
        await asyncio.gather(*(one(http) for _ in range(100)))
        await asyncio.sleep(8)
        rss = [proc.rss_mb()]
        for _ in range(rounds):
            await asyncio.gather(*(one(http) for _ in range(n)))
            await asyncio.sleep(10)
            rss.append(proc.rss_mb())
        return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2400)
    parser.add_argument("--mode", choices=("create", "abandon"), default="create")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with ServeProcess("limits.resume_window_s=1.0", "limits.idle_timeout_s=1.0") as proc:
        rss = asyncio.run(run(proc, args.sessions, args.mode, args.rounds))
    for k in range(1, len(rss)):
        grown = rss[k] - rss[k - 1]
        print(
            f"{args.mode} round {k}: {args.sessions} HTTP sessions, RSS {rss[k - 1]:.1f} -> {rss[k]:.1f} MB "
            f"(+{grown:.2f} MB, {grown * 1024 / args.sessions:.1f} KB per session)"
        )
    grown = rss[-1] - rss[0]
    total = args.sessions * args.rounds
    per = grown * 1024 / total
    print(f"{args.mode}: {total} sessions in all, +{grown:.2f} MB ({per:.2f} KB per session)")


if __name__ == "__main__":
    main()
