"""Session deadlines: waiting in ``feed`` (backpressure) is not idleness, and ``session.end``
has its own deadline so a stuck engine cannot hold a session slot forever.

The engine stage here is a fault injector (``FakeHeldEngine``): each audio frame is one
utterance whose final leaves only when the test releases it. Everything waits on events.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asrhub.config import Limits
from asrhub.frames import ErrorEvent, Event, FinalTranscript, Frame, RawAudio
from asrhub.hub import Hub
from asrhub.plugin import Operator, SessionContext
from asrhub.session.session import State

from .fake_utterances import utterance_stage


class FakeHeldEngine:
    """Each RawAudio frame is an utterance held (``ctx.pending`` taken) until ``release``."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def pipeline(self, ctx: SessionContext) -> Operator:
        async def work(n: int, _frame: RawAudio) -> Frame:
            await self.release.wait()
            return FinalTranscript(n, "held", 0.0, 0.0, "fake_held")

        return utterance_stage(ctx, work)


def make_hub(engine: FakeHeldEngine, **limits: Any) -> Hub:
    return Hub(providers={}, pipeline_factory=engine.pipeline, limits=Limits(**limits))


async def test_time_parked_in_feed_is_not_idle_time() -> None:
    engine = FakeHeldEngine()
    session = make_hub(engine, idle_timeout_s=0.1, max_pending_segments=2).open()
    events: list[Event] = []
    session.events.subscribe(events.append)
    checks, checked_thrice = 0, asyncio.Event()
    check = session._check_idle

    def spy() -> None:  # every idle check after the first one runs through here
        nonlocal checks
        checks += 1
        check()
        if checks >= 3:
            checked_thrice.set()

    session._check_idle = spy  # type: ignore[method-assign]
    await session.feed(b"one")  # one of the two pending slots
    parked = asyncio.create_task(session.feed(b"two"))  # waits: the engine holds both
    closed = asyncio.ensure_future(session.wait_closed())
    await asyncio.wait(
        [asyncio.ensure_future(checked_thrice.wait()), closed],
        timeout=30,
        return_when=asyncio.FIRST_COMPLETED,
    )
    assert session.state is State.OPEN, [e.to_dict() for e in events]  # parked, not idle
    assert not parked.done()
    engine.release.set()
    await parked
    assert await asyncio.wait_for(session.end(), 30) == "end"
    assert [e.segment_id for e in events if isinstance(e, FinalTranscript)] == [1, 2]
    closed.cancel()


async def test_a_stuck_engine_cannot_hold_an_ending_session_forever() -> None:
    engine = FakeHeldEngine()  # never released
    hub = make_hub(engine, end_timeout_s=0.2)
    session = hub.open()
    events: list[Event] = []
    session.events.subscribe(events.append)
    await session.feed(b"audio")
    assert await asyncio.wait_for(session.end(), 30) == "timeout"
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [(e.code, e.fatal) for e in errors] == [("timeout", True)]
    assert "session.end" in errors[0].message
    assert hub.sessions == {}  # the slot is free
