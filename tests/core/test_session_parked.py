"""A ``feed`` parked forever does not keep its session forever (issue 23, item 2): time parked
is not idle time, up to ``limits.end_timeout_s``; then the session closes with ``timeout``.

``FakeStuckStage`` injects the fault: it holds the session's ``pending`` and never lets go, as a
stage whose own wait had no deadline would."""

from __future__ import annotations

import asyncio

from reactivex import Observable
from reactivex import operators as ops

from asrhub.config import Limits
from asrhub.frames import ErrorEvent, Event, Frame
from asrhub.hub import Hub
from asrhub.plugin import Operator, SessionContext


class FakeStuckStage:
    def pipeline(self, ctx: SessionContext) -> Operator:
        def operator(source: Observable[Frame]) -> Observable[Frame]:
            def hold(frame: Frame) -> Frame:
                ctx.pending.hold("fake_stuck")
                return frame

            return source.pipe(ops.map(hold))

        return operator


async def test_a_feed_parked_past_end_timeout_closes_the_session() -> None:
    hub = Hub(
        providers={},
        pipeline_factory=FakeStuckStage().pipeline,
        limits=Limits(idle_timeout_s=0.1, end_timeout_s=0.5),
    )
    session = hub.open()
    events: list[Event] = []
    session.events.subscribe(events.append)
    started = asyncio.get_running_loop().time()
    parked = asyncio.ensure_future(session.feed(b"\x00\x00"))
    assert await asyncio.wait_for(session.wait_closed(), 10) == "timeout"
    await asyncio.wait_for(parked, 5)  # the parked feed returns with the close
    waited = asyncio.get_running_loop().time() - started
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert [(e.code, e.fatal) for e in errors] == [("timeout", True)]
    assert "took no audio" in errors[0].message
    assert 0.5 <= waited  # not before the bound: parking is not idleness
    assert not hub.sessions
