"""10,000 sessions' worth of open/feed/close through one Hub leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import reactivex
import structlog

from asrhub.frames import Event, SpeechEnded, SpeechStarted
from asrhub.hub import Hub
from asrhub.wiring import build_pipeline
from tests import audio_utils as au

CYCLES = 10_000
ROOT = Path(__file__).resolve().parents[2]


def live_subjects() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, reactivex.subject.Subject))


def test_ten_thousand_sessions_leave_nothing_behind() -> None:
    """Run in a fresh interpreter: pytest's own capture of log records and output (and other
    tests' leftovers) would otherwise be counted as the hub's growth."""
    done = subprocess.run([sys.executable, __file__], capture_output=True, text=True, timeout=600, cwd=ROOT)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    asyncio.run(_cycles())


async def _cycles() -> None:
    hub = Hub(providers={}, pipeline_factory=build_pipeline)
    speech, rate = au.load_wav("tests/fixtures/quick_fox.wav")
    frame = au.pcm16_bytes(speech[:rate])  # one second: speech starts in it
    process = psutil.Process(os.getpid())

    async def cycle(n: int) -> list[Event]:
        session = hub.open({"provider": "none"})
        events: list[Event] = []
        session.events.subscribe(events.append)
        await session.feed(frame)
        if n % 2:
            await session.end()  # flushed path
        else:
            session.close("client_gone")  # abrupt path
        return events

    for n in range(500):  # warm-up: allocator and import caches settle
        await cycle(n)
    gc.collect()
    rss_before = process.memory_info().rss
    subjects_before = live_subjects()

    ended_with_speech = 0
    for n in range(CYCLES):
        events = await cycle(n)
        if any(isinstance(e, SpeechStarted) for e in events) and any(
            isinstance(e, SpeechEnded) for e in events
        ):
            ended_with_speech += 1

    gc.collect()
    rss_after = process.memory_info().rss
    assert hub.sessions == {}
    assert live_subjects() <= subjects_before
    assert ended_with_speech >= CYCLES // 2 - 1  # the flushed half closed its utterance
    grown_mb = (rss_after - rss_before) / 2**20
    print(f"RSS before {rss_before / 2**20:.1f} MB, after {rss_after / 2**20:.1f} MB, grew {grown_mb:.2f} MB")
    assert grown_mb < 8, f"RSS grew {grown_mb:.1f} MB over {CYCLES} sessions"
    assert not np.isnan(grown_mb)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
