"""One audio session: an input subject, one composed pipeline, one shared output.

Lifecycle::

    OPEN --end()--> ENDING --(pipeline flushed)--> CLOSED
      \\              \\___ limits.end_timeout_s ____________/
       \\______________ close() / fatal error / idle timeout ____/

The key's daily audio quota (:mod:`asrhub.usage`) ends a session the way ``end()`` does, by
itself: the chain's ``meter_audio`` stage cuts the audio where the quota ends and reports it;
from then on ``feed`` drops what comes (it is never decoded), the input completes, the
utterance in flight gets its final, and the last events are an ``error`` ``quota_exceeded``
(fatal) and ``session.closed`` with that reason.

The idle timer (``limits.idle_timeout_s``) measures time without input, not counting time a
client spends parked in ``feed`` while the engine is busy (that is backpressure, not silence) —
up to ``limits.end_timeout_s``: a ``feed`` parked longer than that (every wait of the chain has
its own deadline, so this is the bound of last resort) closes the session with ``timeout``.

Every method runs on the event loop thread. ``close`` is idempotent and has no ``await`` inside,
so two callers racing to close (a transport's ``finally`` and the idle timer, say) cannot
interleave: the first one closes, the second one finds it closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from enum import Enum

from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase
from reactivex.subject import Subject

from asrhub.config import SessionConfig
from asrhub.errors import HubError
from asrhub.flow import Inlet
from asrhub.frames import ErrorEvent, Event, Frame, RawAudio, SessionClosed, SessionUpdated
from asrhub.plugin import Operator
from asrhub.session.context import Context
from asrhub.session.delivery import EventQueue
from asrhub.telemetry import end_session
from asrhub.usage import QUOTA_EXCEEDED

EARLY_EVENTS = 32
"""Bound on the events kept for a first subscriber that attaches after they were emitted."""


class State(Enum):
    OPEN = "open"
    ENDING = "ending"
    CLOSED = "closed"


class Session:
    def __init__(
        self,
        ctx: Context,
        pipeline: Operator,
        *,
        on_closed: Callable[[Session], None] = lambda _s: None,
    ) -> None:
        self.ctx = ctx
        self.id = ctx.session_id
        self.config = ctx.config
        """The effective config: the one it started with, then each ``session.update``'s."""
        self.state = State.OPEN
        self.close_reason: str | None = None
        self._loop = asyncio.get_running_loop()
        self._on_closed = on_closed
        self._input = Inlet()  # one subscriber, called directly: no Subject locks per frame
        self._output: Subject[Event] = Subject()
        self._early: list[Event] | None = []  # events emitted before anyone subscribed
        self._done: asyncio.Future[str] = self._loop.create_future()
        self._last_input = self._loop.time()
        self._idle = self._loop.call_later(ctx.limits.idle_timeout_s, self._check_idle)
        self._ending: asyncio.TimerHandle | None = None
        self._parked = 0  # feed calls waiting for the engine (backpressure)
        self._parked_since = 0.0  # when the oldest of them began waiting
        self.bytes_in = 0
        self._quota_cut = False  # the key's quota was reached: audio is dropped, the session ends
        if ctx.usage is not None:
            ctx.usage.on_exhausted = self._quota_reached
        self._metrics = ctx.metrics
        self._counters = ctx.metrics.stream(ctx.transport)
        self._subscription: DisposableBase | None = None
        self._subscription = self._input.pipe(pipeline).subscribe(
            on_next=self._on_frame, on_error=self._on_error, on_completed=self._on_completed
        )

    # ------------------------------------------------------------------ public API

    @property
    def events(self) -> Observable[Event]:
        """Every event of this session, pushed as it happens; completes after ``session.closed``.

        The first subscriber also receives what the pipeline emitted before anyone subscribed
        (say, an error raised while the session was being built); later subscribers see only
        what happens after they subscribe.
        """

        def subscribe(
            observer: ObserverBase[Event], scheduler: SchedulerBase | None = None
        ) -> DisposableBase:
            early, self._early = self._early, None
            for event in early or ():
                observer.on_next(event)
            return self._output.subscribe(observer, scheduler=scheduler)

        return Observable(subscribe)

    async def feed(self, data: bytes) -> None:
        """Append audio. Returns once the session can take more (backpressure)."""
        if self._quota_cut:
            return  # past the key's quota: not decoded; the session is ending (see the module)
        if self.state is not State.OPEN:
            self._metrics.error("bad_message")
            raise HubError(
                "bad_message",
                f"audio after the session {'ended' if self.state is State.ENDING else 'closed'}",
            )
        if len(data) > self.ctx.limits.max_frame_bytes:
            self._metrics.drop("too_large")
            self._metrics.error("too_large")
            raise HubError(
                "too_large",
                f"audio frame of {len(data)} bytes exceeds the limit of {self.ctx.limits.max_frame_bytes}",
            )
        self._last_input = self._loop.time()
        self.bytes_in += len(data)
        counters = self._counters
        counters.frames_in += 1
        counters.bytes_in += len(data)
        if self.ctx.trace is not None:
            self.ctx.trace.audio(data)
        self._input.on_next(RawAudio(data))
        pending = self.ctx.pending
        if not pending.ready:
            if not self._parked:
                self._parked_since = self._loop.time()
            self._parked += 1
            try:
                await pending.wait_ready()
            finally:
                self._parked -= 1
                self._last_input = self._loop.time()

    def touch(self) -> None:
        """The client is alive without audio (a keep-alive message): restart the idle clock."""
        self._last_input = self._loop.time()

    def suspend_idle(self) -> None:
        """No client feeds this session here any more, on purpose: it was handed over (a
        draining hub) and waits, open, until another node resumes it. The idle timeout stops;
        whoever keeps the session bounds the wait (:meth:`asrhub.session.resume.Resumes.hand_over`)."""
        self._idle.cancel()

    def reconfigure(self, config: SessionConfig) -> SessionUpdated:
        """Live reconfiguration (``session.update``), with a config the hub validated: a
        ``session.updated`` frame enters the stream behind the audio fed so far, so each stage
        takes the new settings in order, from the next utterance on, and the client gets the
        frame as the confirmation. Nothing shared is changed: audio fed before the update is
        transcribed with the settings it was fed under. See :meth:`asrhub.hub.Hub.update`."""
        if self.state is not State.OPEN:
            raise HubError("bad_message", "session.update after the session ended")
        self.config = config
        frame = SessionUpdated(config=config.to_dict(), settings=config)
        if self.ctx.trace is not None:
            self.ctx.trace.update(frame.config)
        self._input.on_next(frame)
        return frame

    async def end(self) -> str:
        """Flush: every buffered utterance gets its final, then ``session.closed``."""
        self._begin_end()
        return await asyncio.shield(self._done)

    def _begin_end(self) -> None:
        if self.state is State.OPEN:
            self.state = State.ENDING
            self._idle.cancel()
            self._ending = self._loop.call_later(self.ctx.limits.end_timeout_s, self._end_expired)
            if self.ctx.trace is not None:
                self.ctx.trace.ended()
            self._input.on_completed()

    def close(self, reason: str = "closed") -> None:
        """Stop now, dropping whatever is buffered. Idempotent."""
        self._finish(reason)

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._done)

    def queue(self, maxsize: int | None = None) -> EventQueue:
        """A bounded queue of this session's events for one subscriber (a transport's
        connection; see :mod:`asrhub.session.delivery`), its drops counted in the hub's
        metrics. ``maxsize``: ``limits.subscriber_queue`` by default."""
        return EventQueue(self.events, maxsize or self.ctx.limits.subscriber_queue, metrics=self.ctx.metrics)

    async def iter_events(self, maxsize: int | None = None) -> AsyncIterator[Event]:
        """``async for`` over the events through a bounded queue (see :meth:`queue`)."""
        queue = self.queue(maxsize)
        try:
            async for event in queue:
                yield event
        finally:
            queue.close()

    @property
    def subscribers(self) -> int:
        """Observers attached to this session's events right now (read by /metrics)."""
        return len(self._output.observers)

    @property
    def quota_reached(self) -> bool:
        """The key's audio quota ended this session: audio fed now is dropped on purpose (the
        session ends by itself with ``quota_exceeded``; a transport need not say more)."""
        return self._quota_cut

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    # ------------------------------------------------------------------ internals

    def _emit(self, event: Event, *, from_chain: bool = False) -> None:
        """``from_chain``: the pipeline's output (else the session's own event: a timeout, the
        quota, ``session.closed``; a trace keeps the two apart)."""
        self._metrics.event_out(event)
        if self.ctx.trace is not None:
            self.ctx.trace.event(event, "pipeline" if from_chain else "session")
        early = self._early
        if early is not None and len(early) < EARLY_EVENTS:
            early.append(event)
        self._output.on_next(event)

    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, Event):
            self._emit(frame, from_chain=True)
            if isinstance(frame, ErrorEvent) and frame.fatal:
                self._finish("error")

    def _on_error(self, exc: Exception) -> None:
        code = exc.code if isinstance(exc, HubError) else "provider_failed"
        self._emit(ErrorEvent(code=code, message=str(exc) or type(exc).__name__, fatal=True))
        self.ctx.log.error("session failed", error=repr(exc))
        self._finish("error")

    def _on_completed(self) -> None:
        if self._quota_cut:
            self._emit(ErrorEvent(code=QUOTA_EXCEEDED, message=self._quota_message(), fatal=True))
            self._finish(QUOTA_EXCEEDED)
        else:
            self._finish("end")

    def _quota_reached(self) -> None:
        """The ``meter_audio`` stage cut the audio at the key's quota (called from inside the
        chain, so the end begins on the next turn of the loop, outside it)."""
        self._quota_cut = True
        self._loop.call_soon(self._begin_end)
        self.ctx.log.info("session reached its key's audio quota")

    def _quota_message(self) -> str:
        usage = self.ctx.usage
        return usage.message() if usage is not None else "the API key's daily audio quota is used up"

    def _check_idle(self) -> None:
        if self.state is not State.OPEN:
            return
        idle_for = self._loop.time() - self._last_input
        limit = self.ctx.limits.idle_timeout_s
        parked_for = self._loop.time() - self._parked_since if self._parked else 0.0
        most = self.ctx.limits.end_timeout_s
        if self._parked and parked_for >= most:  # a wait that never ends is not backpressure
            message = f"the session took no audio for {parked_for:.0f} s (limit {most:g} s)"
            self._emit(ErrorEvent(code="timeout", message=message, fatal=True))
            self.ctx.log.warning("feed parked too long", parked_s=round(parked_for, 1))
            self._finish("timeout")
        elif self._parked:  # the client is waiting for us, not silent
            self._idle = self._loop.call_later(min(limit, most - parked_for), self._check_idle)
        elif idle_for >= limit:
            self._emit(ErrorEvent(code="timeout", message=f"no audio for {limit:g} s", fatal=True))
            self._finish("timeout")
        else:
            self._idle = self._loop.call_later(limit - idle_for, self._check_idle)

    def _end_expired(self) -> None:
        if self.state is State.ENDING:
            limit = self.ctx.limits.end_timeout_s
            message = f"the session did not finish within {limit:g} s of session.end"
            self._emit(ErrorEvent(code="timeout", message=message, fatal=True))
            self.ctx.log.warning("session end timed out", pending=self.ctx.pending.count)
            self._finish("timeout")

    def _finish(self, reason: str) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.close_reason = reason
        self._idle.cancel()
        if self._ending is not None:
            self._ending.cancel()
        if self.ctx.usage is not None:
            self.ctx.usage.close()  # credit the audio counted since its last batch
        self.ctx.pending.open_all()
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.dispose()
        self._emit(SessionClosed(reason=reason))
        if self.ctx.trace is not None:
            self.ctx.trace.finish(reason)
        self._output.on_completed()
        end_session(self.ctx.span, reason)
        if not self._done.done():
            self._done.set_result(reason)
        self._on_closed(self)
