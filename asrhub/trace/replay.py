"""Replaying a trace: the recorded session's pipeline, run again on its recorded input, with
the engine's recorded outputs standing in for the engine.

:class:`ReplayEngine` is a provider whose stage answers from the trace: each output the engine
stage produced is emitted again after the same number of the stage's input frames, and each
frame the stage passed straight through is passed again. Every other stage of the chain —
decode, resample, VAD and end of turn, wake word, segmentation, speaker labels, formatting —
runs for real on the recorded bytes. Those stages run on stream time (seconds derived from
samples), and the only stage whose output depends on the wall clock (the engine's: when a
decode finishes, which partials are shed while the engine is busy) is replaced by recorded
positions, so a replay needs no clock at all: it is deterministic and runs as fast as the
chain (see docs/trace.md).

The session's own decisions (an idle or end ``timeout``, the key's quota, ``session.closed``)
depend on wall time and are not re-made: they are printed where the trace has them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from reactivex import Observable, abc

from asrhub.config import Limits, SessionConfig, parse_session_config
from asrhub.flow import Inlet, Pending
from asrhub.frames import (
    Event,
    FinalTranscript,
    Frame,
    RawAudio,
    Samples,
    Segment,
    SessionClosed,
    SessionStarted,
    SessionUpdated,
    event_from_dict,
)
from asrhub.plugin import (
    Capabilities,
    Operator,
    Provider,
    ProviderError,
    SessionContext,
    Transcription,
)
from asrhub.protocol import encode_event
from asrhub.session.context import Context
from asrhub.trace import records as r

PipelineFactory = Callable[[Context], Operator]


@dataclasses.dataclass
class Trace:
    """A trace file, read: what replay needs, in order."""

    header: r.Header
    inputs: list[r.Audio | r.Update | r.End]
    engine: dict[int, list[tuple[int, Event]]]
    passed: dict[int, bytes]
    events: list[r.Event]
    truncated: r.Truncated | None = None
    closed: r.Closed | None = None

    @property
    def ended(self) -> bool:
        return any(isinstance(i, r.End) for i in self.inputs)

    @property
    def config(self) -> SessionConfig:
        return parse_session_config(self.header.config)

    @property
    def limits(self) -> Limits:
        return msgspec.convert(self.header.limits, Limits)

    def audio(self) -> bytes:
        return b"".join(i.data for i in self.inputs if isinstance(i, r.Audio))

    def finals(self) -> list[dict[str, Any]]:
        """The finals the session sent (as their wire JSON objects)."""
        events = (msgspec.json.decode(e.json) for e in self.events)
        return [e for e in events if e.get("type") == FinalTranscript.type]


def load(data: bytes) -> Trace:
    """Read a trace file; raises :class:`~asrhub.trace.records.TraceError`."""
    items = iter(r.decode(data))
    header = next(items, None)
    if not isinstance(header, r.Header):
        raise r.TraceError("the trace has no header")
    trace = Trace(header=header, inputs=[], engine={}, passed={}, events=[])
    for record in items:
        if isinstance(record, r.Audio | r.Update | r.End):
            trace.inputs.append(record)
        elif isinstance(record, r.Engine):
            event = event_from_dict(msgspec.json.decode(record.event))
            trace.engine.setdefault(record.stage, []).append((record.after, event))
        elif isinstance(record, r.Passed):
            trace.passed[record.stage] = record.flags
        elif isinstance(record, r.Event):
            trace.events.append(record)
        elif isinstance(record, r.Truncated):
            trace.truncated = record
        elif isinstance(record, r.Closed):
            trace.closed = record
    return trace


class ReplayEngine:
    """The recorded engine: its stage answers from the trace (see the module docstring). It has
    the recorded engine's name and capabilities, so the chain is built as it was."""

    def __init__(self, trace: Trace) -> None:
        header = trace.header
        self.name = header.provider or "replay"
        self.capabilities = msgspec.convert(header.capabilities or {}, Capabilities)
        self._trace = trace
        self._stages = 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def transcribe(self, samples: Samples, **options: Any) -> Transcription:
        raise ProviderError(f"{self.name} (replay): a replayed engine answers only within its session")

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        index, self._stages = self._stages, self._stages + 1
        return replay_stage(self._trace.engine.get(index, []), self._trace.passed.get(index))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "replay": True}


def replay_stage(outputs: list[tuple[int, Event]], passed: bytes | None) -> Operator:
    """An engine stage from its recording: ``outputs`` (after how many input frames, event)
    are emitted at those places; input frame ``i`` passes on when ``passed[i]`` is set (past
    the recording, every frame but a Segment passes, as the batch stage does)."""

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            queue = deque(outputs)
            flags = passed or b""
            count = 0

            def flush(upto: float) -> None:
                while queue and queue[0][0] <= upto:
                    observer.on_next(queue.popleft()[1])

            def on_next(frame: Frame) -> None:
                nonlocal count
                flush(count)
                count += 1
                if count <= len(flags):
                    if flags[count - 1]:
                        observer.on_next(frame)
                elif not isinstance(frame, Segment):
                    observer.on_next(frame)

            def on_completed() -> None:
                flush(float("inf"))
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator


async def run_chain(
    trace: Trace,
    build: PipelineFactory,
    *,
    providers: tuple[Provider, ...],
    config: SessionConfig | None = None,
    timeout_s: float | None = None,
) -> list[Event]:
    """The events of the chain ``build`` makes for the trace's session, fed its recorded input
    (chunks as they came, updates at their places), then completed."""
    config = config or trace.config
    limits = trace.limits
    pending = Pending(limits.max_pending_segments)
    ctx = Context(
        session_id=trace.header.session_id,
        config=config,
        limits=limits,
        providers=providers,
        pending=pending,
        transport=trace.header.transport,
    )
    events: list[Event] = []
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def on_error(exc: Exception) -> None:
        if not done.done():
            done.set_exception(exc)

    def on_completed() -> None:
        if not done.done():
            done.set_result(None)

    inlet = Inlet()
    subscription = inlet.pipe(build(ctx)).subscribe(
        on_next=lambda f: events.append(f) if isinstance(f, Event) else None,
        on_error=on_error,
        on_completed=on_completed,
    )
    try:
        for item in trace.inputs:
            if done.done():
                break
            if isinstance(item, r.Audio):
                inlet.on_next(RawAudio(item.data))
                if not pending.ready:  # as Session.feed: the chain's bounds hold in a replay too
                    await asyncio.wait_for(pending.wait_ready(), limits.end_timeout_s)
            elif isinstance(item, r.Update):
                updated = parse_session_config(item.config)
                inlet.on_next(SessionUpdated(config=updated.to_dict(), settings=updated))
        inlet.on_completed()
        await asyncio.wait_for(asyncio.shield(done), timeout_s or limits.end_timeout_s)
    finally:
        subscription.dispose()
    return events


async def replay(trace: Trace, build: PipelineFactory) -> list[str]:
    """The session's wire events, as JSON lines: ``session.started``, then the chain's events
    re-made by the replay merged with the session's own recorded ones, in the recorded order."""
    header = trace.header
    engine = ReplayEngine(trace)
    providers: tuple[Provider, ...] = (engine,) if header.provider else ()
    chain = [encode_event(e) for e in await run_chain(trace, build, providers=providers)]
    lines = [encode_event(SessionStarted(session_id=header.session_id, config=header.config))]
    recorded_chain = sum(1 for e in trace.events if e.origin == "pipeline")
    if not trace.ended and len(chain) > recorded_chain:
        chain = chain[:recorded_chain]  # closed before its end: the chain was stopped there
    if trace.truncated is not None:
        reason = trace.closed.reason if trace.closed is not None else "closed"
        return [*lines, *chain, encode_event(SessionClosed(reason=reason))]
    last = max((i for i, e in enumerate(trace.events) if e.origin == "pipeline"), default=-1)
    remaining = deque(chain)
    for event in trace.events[: last + 1]:
        if event.origin == "session":
            lines.append(event.json)
        elif remaining:
            lines.append(remaining.popleft())
    # anything the replay made beyond the recording, then the session's last word(s)
    return [*lines, *remaining, *(e.json for e in trace.events[last + 1 :])]


def with_engine(config: SessionConfig, provider: str, model: str | None) -> SessionConfig:
    """The trace's config with another engine (``--engine NAME[:MODEL]``; the hub validates
    the result with ``resolve_config``)."""
    return msgspec.structs.replace(config, provider=provider, model=model)
