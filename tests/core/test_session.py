"""Session and Hub lifecycle: ordering, flush on end, idempotent close, races, backpressure."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from reactivex import Observable
from reactivex import operators as ops

from asrhub.config import Limits
from asrhub.errors import HubError
from asrhub.frames import (
    ErrorEvent,
    Event,
    FinalTranscript,
    Frame,
    RawAudio,
    SessionClosed,
    SpeechEnded,
)
from asrhub.hub import Hub
from asrhub.plugin import Operator, SessionContext
from asrhub.session.session import Session, State

from .fake_utterances import utterance_stage


class FakeSlowEngine:
    """Fault injection: an engine stage that takes ``delay`` seconds per utterance.

    Each RawAudio frame is one 'utterance'; its final carries the frame's byte count.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0

    def pipeline(self, ctx: SessionContext) -> Operator:
        async def work(n: int, frame: RawAudio) -> Frame:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            return FinalTranscript(n, str(len(frame.data)), 0.0, 0.0, "fake")

        return utterance_stage(ctx, work, pass_other=True, last=SpeechEnded(t=1.0))


def make_hub(engine: FakeSlowEngine, **limits: Any) -> Hub:
    return Hub(providers={}, pipeline_factory=engine.pipeline, limits=Limits(**limits))


async def collect(session: Any) -> list[Event]:
    events: list[Event] = []
    session.events.subscribe(events.append)
    return events


async def test_end_flushes_every_final_before_closed() -> None:
    hub = make_hub(FakeSlowEngine(0.01))
    session = hub.open()
    events = await collect(session)
    for size in (10, 20, 30):
        await session.feed(b"\0" * size)
    assert await session.end() == "end"
    texts = [e.text for e in events if isinstance(e, FinalTranscript)]
    assert texts == ["10", "20", "30"]
    assert isinstance(events[-1], SessionClosed) and events[-1].reason == "end"
    assert hub.sessions == {}


async def test_feed_blocks_while_engine_is_busy_instead_of_buffering() -> None:
    engine = FakeSlowEngine(0.2)
    hub = make_hub(engine, max_pending_segments=2)
    session = hub.open()
    await collect(session)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(6):
        await session.feed(b"x")
        assert session.ctx.pending.count <= 2  # nothing queues up behind the engine
    elapsed = loop.time() - started
    # Six utterances, two at a time, 0.2 s each: the sixth feed returns only when the
    # third round has finished, so the client was held back instead of buffered.
    assert elapsed >= 0.55
    assert engine.max_in_flight == 2
    await session.end()


async def test_close_is_idempotent_and_safe_to_race() -> None:
    """end() in flight and two close() calls from other tasks, at every interleaving a few
    yields apart: one SessionClosed, one reason (the first closer's), end() returns it.
    The closers record the state they saw, which shows the race window (a close landing while
    end() is still flushing) was actually hit, not only the trivial orders."""
    seen_states: set[State] = set()
    for first_delay in range(4):
        for second_delay in range(4):
            hub = make_hub(FakeSlowEngine(0.05))
            session = hub.open()
            events = await collect(session)
            await session.feed(b"x")
            ending = asyncio.ensure_future(session.end())

            async def closer(delay: int, reason: str, s: Session = session) -> None:
                for _ in range(delay):
                    await asyncio.sleep(0)
                seen_states.add(s.state)
                s.close(reason)

            await asyncio.gather(closer(first_delay, "first"), closer(second_delay, "second"))
            reason = await ending
            assert reason == session.close_reason
            assert reason in ("first", "second", "end"), reason
            if first_delay < second_delay:
                assert reason in ("first", "end"), (first_delay, second_delay, reason)
            assert [type(e) for e in events].count(SessionClosed) == 1
            assert session.state is State.CLOSED
            assert hub.sessions == {}
            with pytest.raises(HubError) as err:
                await session.feed(b"late")
            assert err.value.code == "bad_message"
    assert State.ENDING in seen_states, "no close() ever landed while end() was in flight"


async def test_feed_while_closing_never_hangs() -> None:
    hub = make_hub(FakeSlowEngine(5.0), max_pending_segments=1)
    session = hub.open()
    await collect(session)
    await session.feed(b"1")
    blocked = asyncio.ensure_future(session.feed(b"2"))
    await asyncio.sleep(0.01)
    session.close("gone")
    await asyncio.wait_for(blocked, 1.0)  # released by close, not stuck forever


async def test_capacity_is_enforced_atomically_and_per_key() -> None:
    hub = make_hub(FakeSlowEngine(0.0), max_sessions=3, max_sessions_per_key=2)
    a = hub.open(key="k1")
    hub.open(key="k1")
    with pytest.raises(HubError) as err:
        hub.open(key="k1")
    assert err.value.code == "capacity"
    hub.open(key="k2")
    with pytest.raises(HubError) as err:
        hub.open(key="k3")
    assert err.value.code == "capacity"
    a.close()
    hub.open(key="k1")
    assert len(hub.sessions) == 3


async def test_opening_the_same_session_id_twice_is_refused() -> None:
    hub = make_hub(FakeSlowEngine(0.0))
    hub.open(session_id="abc")
    with pytest.raises(HubError):
        hub.open(session_id="abc")


async def test_oversized_frame_is_refused_without_ending_the_session() -> None:
    hub = make_hub(FakeSlowEngine(0.0), max_frame_bytes=1024)
    session = hub.open()
    with pytest.raises(HubError) as err:
        await session.feed(b"\0" * 2048)
    assert err.value.code == "too_large" and not err.value.fatal
    await session.feed(b"\0" * 100)
    await session.end()


async def test_idle_session_times_out() -> None:
    hub = make_hub(FakeSlowEngine(0.0), idle_timeout_s=0.05)
    session = hub.open()
    events = await collect(session)
    assert await asyncio.wait_for(session.wait_closed(), 1.0) == "timeout"
    assert any(isinstance(e, ErrorEvent) and e.code == "timeout" for e in events)


async def test_unknown_provider_and_bad_config() -> None:
    hub = make_hub(FakeSlowEngine(0.0))
    with pytest.raises(HubError) as err:
        hub.open({"provider": "nope"})
    assert err.value.code == "unknown_provider"
    with pytest.raises(HubError) as err:
        hub.open({"audio": {"sample_rate": "fast"}})
    assert err.value.code == "bad_message" and "sample_rate" in err.value.message


async def test_iter_events_yields_until_closed() -> None:
    hub = make_hub(FakeSlowEngine(0.0))
    session = hub.open()
    seen: list[str] = []

    async def reader() -> None:
        async for event in session.iter_events():
            seen.append(event.type)

    task = asyncio.ensure_future(reader())
    await asyncio.sleep(0)
    await session.feed(np.zeros(4, np.int16).tobytes())
    await session.end()
    await asyncio.wait_for(task, 1.0)
    assert seen == ["transcript.final", "vad.speech_ended", "session.closed"]


async def test_pipeline_errors_end_the_session_with_a_fatal_error() -> None:
    def broken(ctx: SessionContext) -> Operator:
        return ops.map(lambda f: 1 / 0)

    hub = Hub(providers={}, pipeline_factory=broken)
    session = hub.open()
    events = await collect(session)
    await session.feed(b"x")
    assert session.state is State.CLOSED
    assert isinstance(events[0], ErrorEvent) and events[0].fatal
    assert hub.sessions == {}


async def test_an_error_raised_while_building_reaches_the_first_subscriber() -> None:
    def fails_on_subscribe(ctx: SessionContext) -> Operator:
        def stage(source: Observable[Frame]) -> Observable[Frame]:
            def subscribe(observer: Any, scheduler: Any = None) -> Any:
                observer.on_next(ErrorEvent(code="bad_message", message="no such wake word", fatal=True))
                return source.subscribe(observer)

            return Observable(subscribe)

        return stage

    hub = Hub(providers={}, pipeline_factory=fails_on_subscribe)
    session = hub.open()
    events = await collect(session)
    assert [e.type for e in events] == ["error", "session.closed"]
    assert session.closed and hub.sessions == {}
