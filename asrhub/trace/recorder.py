"""Recording a session: :class:`Tracer` (one per hub) and :class:`SessionRecorder` (one per
recorded session).

The session tells its recorder every input chunk, ``session.update``, ``session.end`` and
outgoing event (:class:`asrhub.session.context.SessionTrace`); the composition root wraps the
engine stage with :meth:`SessionRecorder.engine`, which records what the engine produced and,
for each, how many of the stage's input frames had arrived (so ``asrhub replay`` can put it back
at the same place without any clock). The trace is held in memory, bounded by
``trace.max_bytes`` and ``trace.max_seconds`` (past either, one ``truncated`` record ends it and
the session goes on unrecorded), and handed to the store when the session closes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import msgspec
from reactivex import Observable, abc

from asrhub.errors import HubError
from asrhub.frames import Event, Frame
from asrhub.logging import get_logger
from asrhub.plugin import Operator, Provider
from asrhub.protocol import encode_event, encode_json
from asrhub.session.context import Context
from asrhub.settings.schema import TraceSettings
from asrhub.trace import records as r
from asrhub.trace.store import TraceStore, read

log = get_logger("asrhub.trace")


def hub_version() -> str:
    try:
        return version("asrhub")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without metadata
        return "unknown"


class Tracer:
    """Decides which sessions are recorded and stores their traces (the hub's ``tracing``)."""

    def __init__(
        self, settings: TraceSettings, store: TraceStore, *, chance: Callable[[], float] = random.random
    ) -> None:
        self.settings, self.store, self._chance = settings, store, chance
        self._writes: set[asyncio.Task[None]] = set()
        self.open_count = 0
        """Sessions being recorded now (each holds its trace in memory)."""
        self.version = hub_version()

    def open(self, ctx: Context) -> SessionRecorder | None:
        """A recorder when the session asks or the sample rate picks it; raises ``capacity``
        for a session that asks while ``trace.max_open`` sessions are being recorded."""
        rate = self.settings.sample_rate
        if not ctx.config.trace and not (rate > 0 and self._chance() < rate):
            return None
        if self.open_count >= self.settings.max_open:
            if not ctx.config.trace:
                return None
            most = self.settings.max_open
            raise HubError("capacity", f"the hub records at most {most} sessions at once", fatal=True)
        self.open_count += 1
        return SessionRecorder(ctx, self)

    def store_trace(self, session_id: str, data: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._put(session_id, data))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _put(self, session_id: str, data: bytes) -> None:
        try:
            await self.store.put(session_id, data)
        except Exception as exc:  # a full disk or an unreachable Redis loses one trace, nothing else
            log.warning("trace not stored", session_id=session_id, error=repr(exc))
        else:
            log.info("trace stored", session_id=session_id, bytes=len(data))

    async def flushed(self) -> None:
        """Every trace of a closed session is in the store."""
        while self._writes:
            await asyncio.wait(list(self._writes))

    async def read(self, session_id: str, key: str | None) -> bytes | None:
        return await read(self.store, session_id, key)

    async def close(self) -> None:
        await self.flushed()
        await self.store.close()


class SessionRecorder:
    """One session's trace (see the module docstring)."""

    def __init__(self, ctx: Context, tracer: Tracer) -> None:
        self.session_id = ctx.session_id
        self.tracer = tracer
        self.max_bytes = tracer.settings.max_bytes
        self.max_seconds = tracer.settings.max_seconds
        self.buffer: bytearray | None = bytearray(r.MAGIC)
        self.truncated = False
        self.offset = 0
        self.stages: list[bytearray] = []
        self._t0 = time.monotonic()
        primary: Provider | None = ctx.providers[0] if ctx.providers else None
        self._append(
            r.Header(
                session_id=ctx.session_id,
                key=ctx.key,
                hub_version=tracer.version,
                transport=ctx.transport,
                config=ctx.config.to_dict(),
                limits=msgspec.to_builtins(ctx.limits),
                provider=primary.name if primary is not None else None,
                capabilities=msgspec.to_builtins(primary.capabilities) if primary is not None else None,
                started_at=time.time(),
            )
        )

    def _at(self) -> float:
        return round(time.monotonic() - self._t0, 6)

    def _append(self, record: r.Record, *, always: bool = False) -> bool:
        buffer = self.buffer
        if buffer is None or (self.truncated and not always):
            return False
        data = r.encode(record)
        if not always:
            over = None
            if len(buffer) + len(data) > self.max_bytes:
                over = f"trace.max_bytes ({self.max_bytes}) reached"
            elif self._at() > self.max_seconds:
                over = f"trace.max_seconds ({self.max_seconds:g}) reached"
            if over is not None:
                self.truncated = True
                buffer += r.encode(r.Truncated(reason=over, at=self._at()))
                return False
        buffer += data
        return True

    # ------------------------------------------------------------ SessionTrace

    def audio(self, data: bytes) -> None:
        self._append(r.Audio(offset=self.offset, at=self._at(), data=bytes(data)))
        self.offset += len(data)

    def update(self, config: dict[str, Any]) -> None:
        self._append(r.Update(config=config, at=self._at()))

    def ended(self) -> None:
        self._append(r.End(at=self._at()))

    def event(self, event: Event, origin: Literal["pipeline", "session"]) -> None:
        self._append(r.Event(origin=origin, offset=self.offset, at=self._at(), json=encode_event(event)))

    def engine(self, stage: Operator) -> Operator:
        index = len(self.stages)
        flags = bytearray()
        self.stages.append(flags)
        return _tap(stage, self, index, flags)

    def finish(self, reason: str) -> None:
        if self.buffer is None:
            return
        for index, flags in enumerate(self.stages):
            self._append(r.Passed(stage=index, flags=bytes(flags)), always=True)
        self._append(r.Closed(reason=reason, at=self._at()), always=True)
        data, self.buffer = bytes(self.buffer), None
        self.stages = []
        self.tracer.open_count -= 1
        self.tracer.store_trace(self.session_id, data)


def _tap(stage: Operator, recorder: SessionRecorder, index: int, flags: bytearray) -> Operator:
    """``stage``, with its outputs recorded: a frame it passes on while handling that very input
    frame is flagged in ``flags`` (replay passes it again); anything else it emits (the engine's
    partials, finals, errors) is recorded with the number of input frames seen so far."""

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            count = 0
            current: list[Frame | None] = [None]

            def inputs(inner: abc.ObserverBase[Frame], sched: abc.SchedulerBase | None = None) -> Any:
                def on_next(frame: Frame) -> None:
                    nonlocal count
                    count += 1
                    if not recorder.truncated:
                        flags.append(0)
                    current[0] = frame
                    try:
                        inner.on_next(frame)
                    finally:
                        current[0] = None

                return source.subscribe(on_next, inner.on_error, inner.on_completed, scheduler=sched)

            def on_output(frame: Frame) -> None:
                if frame is current[0]:
                    if len(flags) == count:
                        flags[-1] = 1
                elif isinstance(frame, Event) and not recorder.truncated:
                    event = encode_json(frame.to_dict())
                    recorder._append(r.Engine(stage=index, after=count, event=event, at=recorder._at()))
                observer.on_next(frame)

            return stage(Observable(inputs)).subscribe(
                on_output, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return Observable(subscribe)

    return operator
