"""The streaming conversation of the contract, on any message transport (WebSocket, Socket.io).

A transport hands every client message to one :class:`StreamConnection` and gives it two
callbacks: ``send(event)`` delivers one hub → client message (awaiting the socket, so a slow
reader slows the sender) and ``close(code)`` ends the connection (``code`` is None after a
normal ``session.closed``, else the error code that ended it, ``"shutdown"``, or ``"handover"``
after a :class:`~asrhub.frames.SessionHandover`). An optional
third, ``abandon()``, runs synchronously the moment the client is found not reading: the
transport makes sure its socket is cut (with a reset) within a deadline, whatever happens to
the tasks that try to close it politely.

::

    client:  session.start ──── audio ── audio ── ping ─── session.end ───────────────────┐
    hub:        session.started ── vad.* ── transcript.* ── pong ── transcript.final ── session.closed ─ close

* one session per connection, opened with ``Hub.open(config, key=…, transport=…)``;
* ``session.started`` first, then the session's events through a bounded
  :class:`~asrhub.session.delivery.EventQueue` drained by one forwarder task;
* ``handle_audio`` awaits ``session.feed``: the transport reads its next frame only after that,
  so a busy engine becomes TCP backpressure;
* a :class:`~asrhub.errors.HubError` becomes an ``error`` event; a fatal one closes;
* a queue overflow closes the connection with ``slow_consumer`` at once, even while the
  forwarder is stuck on a socket the client no longer reads;
* :meth:`release` (the transport's ``finally``) closes the session on any disconnect — except
  a *dropped* connection of a resumable session (``session.start`` with ``"resume": true``),
  which is detached for ``limits.resume_window_s`` so that a ``session.resume`` on a new
  connection can continue it (see :mod:`asrhub.session.resume`);
* a draining hub (SIGTERM, with a cluster) hands a resumable session over (:meth:`hand_off`):
  the queued events, then ``session.handover`` (token, offset), then ``close("handover")``
  (WebSocket 1012; Socket.io a disconnect); the session stays open for a resume elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from reactivex.abc import DisposableBase

from asrhub import telemetry
from asrhub.errors import HubError
from asrhub.frames import (
    ErrorEvent,
    Event,
    Pong,
    SessionClosed,
    SessionHandover,
    SessionResumed,
    SessionStarted,
)
from asrhub.hub import Hub
from asrhub.logging import get_logger
from asrhub.protocol import EndMessage, PingMessage, ResumeMessage, StartMessage, UpdateMessage, parse_message
from asrhub.session.delivery import SLOW_CONSUMER, EventQueue
from asrhub.session.resume import Held
from asrhub.session.resume import after_segment as _after
from asrhub.session.session import Session, State

from .json_input import MAX_BYTES, check_depth

log = get_logger("asrhub.transports")

Send = Callable[[Event], Awaitable[None]]
Close = Callable[[str | None], Awaitable[None]]
Abandon = Callable[[], None]

SEND_TIMEOUT_ON_CLOSE = 1.0
"""How long a last message (``slow_consumer``) may take before the connection is cut anyway."""
HANDOVER_DELIVERY_S = 5.0
"""How long a connection handing its session over may take to deliver what was queued and the
``session.handover`` notice; then it is cut (its client resumes as after a drop)."""
UNKNOWN_TOKEN = "unknown or expired resume token; send session.start to begin a new session"
"""The ``resume_failed`` message for a token neither this node nor the cluster holds."""


class StreamConnection:
    def __init__(
        self,
        hub: Hub,
        *,
        transport: str,
        key: str | None,
        send: Send,
        close: Close,
        abandon: Abandon | None = None,
        queue_size: int | None = None,
    ) -> None:
        self.hub = hub
        self.transport = transport
        self.key = key
        self.queue_size = queue_size or hub.limits.subscriber_queue
        self.session: Session | None = None
        self.queue: EventQueue | None = None
        self.held: Held | None = None
        self._send = send
        self._close = close
        self._abandon = abandon
        self._send_lock = asyncio.Lock()
        self._forwarder: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watch: DisposableBase | None = None
        self._closing = False
        self._finished = asyncio.get_running_loop().create_future()
        self._told_no_session = False
        self._told_ended = False
        self._ending = False  # session.end received: its task may not have run yet
        self._fatal_code: str | None = None
        self._sent_slow_consumer = False
        self._handover: SessionHandover | None = None  # set once the session was handed over
        self.log = log.bind(transport=transport)

    # ------------------------------------------------------------------ client → hub

    async def handle_text(
        self, raw: str | bytes | Mapping[str, Any] | None, *, event: str | None = None
    ) -> None:
        """One control message (JSON text, or a decoded Socket.io payload under ``event``)."""
        if self._handover is not None:  # what the client sends before it sees the close
            return
        try:
            if isinstance(raw, str | bytes) and len(raw) <= MAX_BYTES:
                check_depth(raw)  # before any parser recurses into it (larger: too_large below)
            message = parse_message(raw, event=event)
        except HubError as exc:
            await self.send_error(exc)
            return
        if isinstance(message, PingMessage):
            await self.emit(Pong(id=message.id))
        elif isinstance(message, StartMessage):
            await self._start(message.config, resume=message.resume)
        elif isinstance(message, ResumeMessage):
            await self._resume(message)
        elif isinstance(message, EndMessage):
            await self._end()
        elif isinstance(message, UpdateMessage):
            await self._update(message)

    async def handle_audio(self, data: bytes) -> None:
        """One binary audio frame; returns once the session can take more."""
        if self._handover is not None:  # the client re-sends it on the node that resumes
            return
        session = self.session
        if session is None:
            if not self._told_no_session:  # answered once: audio keeps coming until the client notices
                self._told_no_session = True
                await self.send_error(HubError("bad_message", "send session.start before any audio"))
            return
        if session.quota_reached:
            return  # dropped, not decoded: quota_exceeded and session.closed are on their way
        if session.state is not State.OPEN or self._ending:
            if not self._told_ended:
                self._told_ended = True
                why = "the hub is shutting down" if not self.hub.accepting else "the session has ended"
                await self.send_error(HubError("bad_message", f"audio ignored: {why}"))
            return
        try:
            await session.feed(data)
        except HubError as exc:
            await self.send_error(exc)
        if self.queue:
            # The events this frame produced wait in the queue: give the forwarder its turn
            # before the next frame, so a fast uploader with a healthy reader never looks like
            # a slow consumer (a buffered socket hands us frames without ever yielding).
            await asyncio.sleep(0)

    async def send_error(self, error: HubError) -> None:
        await self.emit(error.to_event())
        if error.fatal:
            await self._close_once(error.code)

    # ------------------------------------------------------------------ session

    async def _start(self, config: Mapping[str, Any] | None, *, resume: bool = False) -> None:
        if self.session is not None:
            await self.send_error(HubError("bad_message", "a session is already open on this connection"))
            return
        try:
            session = await self.hub.open_async(config, key=self.key, transport=self.transport)
        except HubError as exc:
            await self.send_error(exc)
            return
        if self._closing:  # the connection went away while the cluster admitted it
            session.close("disconnected")
            return
        self.session = session
        self.log = self.log.bind(session_id=session.id)
        self.queue = session.queue(self.queue_size)  # first: it gets the early events
        self._watch = session.events.subscribe(on_next=self._after_event)
        token = None
        # a multichannel session numbers its utterances per channel: its log cannot say which one
        # a client has, so it gets no resume token
        if resume and self.hub.resumes.enabled and not session.closed and not session.config.multichannel:
            position = None
            if self.hub.cluster_resumes is not None:
                from asrhub.cluster.resume import pcm_position

                position = pcm_position(session.config)
            self.held = self.hub.resumes.register(session, self.key, self, position=position)
            token = self.held.token
        config_dict = session.config.to_dict()
        await self.emit(SessionStarted(session_id=session.id, config=config_dict, resume_token=token))
        self._forwarder = asyncio.create_task(self._forward(self.queue))

    async def _resume(self, message: ResumeMessage) -> None:
        """Continue a dropped session: ``session.resumed``, the finals it missed, then live."""
        if self.session is not None:
            await self.send_error(HubError("bad_message", "a session is already open on this connection"))
            return
        if not self.hub.accepting and self.hub.can_hand_over:  # draining: another node resumes it
            await self.send_error(
                HubError("capacity", "the hub is shutting down: resume on another node", fatal=True)
            )
            return
        cluster = self.hub.cluster_resumes
        local = self.hub.resumes.get(message.token)
        if local is not None and cluster is not None and not await cluster.confirm_local(local):
            self.hub.resumes.surrender(message.token)  # another node claimed it meanwhile
        claimed = self.hub.resumes.claim(message.token, self.key, self)
        if claimed is None and cluster is not None:
            await self._resume_from_cluster(message)
            return
        if claimed is None:
            await self.send_error(HubError("resume_failed", UNKNOWN_TOKEN))
            return
        held, previous = claimed
        if previous is not None:
            previous.handed_over()
        session = held.session
        self.held, self.session = held, session
        self.log = self.log.bind(session_id=session.id)
        missed, complete = held.log.since(message.last_segment_id)
        held.log.ack(message.last_segment_id)
        # No await between the snapshot and the new subscription: nothing falls between them.
        self.queue = session.queue(self.queue_size)
        self._watch = session.events.subscribe(on_next=self._after_event)
        await self.emit(
            SessionResumed(
                session_id=session.id,
                resume_token=held.token,
                config=session.config.to_dict(),
                replayed=len(missed),
                complete=complete,
                bytes_received=session.bytes_in,
                last_segment_id=message.last_segment_id,
                resume_from_bytes=session.bytes_in,
            )
        )
        for event in missed:
            if isinstance(event, ErrorEvent) and event.fatal:
                self._fatal_code = event.code
            await self.emit(event)
        self._forwarder = asyncio.create_task(self._forward(self.queue))

    async def _resume_from_cluster(self, message: ResumeMessage) -> None:
        """Continue a session another node ran (it died, or the client reconnected elsewhere):
        claim it from the cluster log, open it again here shifted to continue its segment ids
        and stream times, replay what the client missed; the client re-sends its audio from
        ``resume_from_bytes`` (see :mod:`asrhub.cluster.resume`)."""
        from asrhub.cluster.resume import continuation

        cluster = self.hub.cluster_resumes
        assert cluster is not None
        try:
            claimed = await cluster.claim(message.token, self.key)
        except HubError as exc:
            await self.send_error(exc)
            return
        if claimed is None:
            await self.send_error(HubError("resume_failed", UNKNOWN_TOKEN))
            return
        position, last = claimed.position, message.last_segment_id
        base = max(position.seg, last or 0)
        wanted = max(position.pos, message.audio_from_bytes)
        start = -(-wanted // position.frame_bytes) * position.frame_bytes  # whole frames
        position.pos = start
        position.seg = base
        missed = [e for e in claimed.events if _after(e, last)]
        complete = claimed.evicted == 0 or (last is not None and last >= claimed.evicted)
        history = [e for e in claimed.events if _after(e, None)]
        ended = any(isinstance(e, SessionClosed) for e in claimed.events)
        resumed = SessionResumed(
            session_id=claimed.session_id,
            resume_token=message.token,
            config=claimed.config,
            replayed=len(missed),
            complete=complete,
            bytes_received=start,
            last_segment_id=last,
            resume_from_bytes=start,
        )
        if ended:  # it had finished: replay its end, then close as after session.closed
            await self.emit(resumed)
            for event in missed:
                if isinstance(event, ErrorEvent) and event.fatal:
                    self._fatal_code = event.code
                await self.emit(event)
            await self._close_once(self._fatal_code)
            return
        try:
            with telemetry.resumed(claimed.trace, claimed.session_id, cluster.cluster.node):
                session = await self.hub.open_async(
                    claimed.config,
                    key=self.key,
                    transport=self.transport,
                    session_id=claimed.session_id,
                    continuation=continuation(base, start / position.bytes_per_second),
                    speakers=claimed.speakers,
                    resumed=True,
                )
        except HubError as exc:
            await self.send_error(exc)
            return
        session.bytes_in = start
        self.session = session
        self.log = self.log.bind(session_id=session.id)
        self.queue = session.queue(self.queue_size)
        self._watch = session.events.subscribe(on_next=self._after_event)
        self.held = self.hub.resumes.register(
            session, self.key, self, token=message.token, position=position, history=history
        )
        self.log.info("session resumed from the cluster log", resume_from_bytes=start, segment_base=base)
        await self.emit(resumed)
        for event in missed:
            await self.emit(event)
        self._forwarder = asyncio.create_task(self._forward(self.queue))

    def handed_over(self) -> None:
        """A ``session.resume`` on another connection took this session: stop delivering it,
        leave it open, close this connection."""
        self.held, self.session = None, None
        self._stop_delivery()
        if not self._closing:
            self._closing = True
            self._spawn(self._close("resumed"))

    def hand_off(self, notice: SessionHandover) -> bool:
        """The hub drains and hands the session over (:meth:`asrhub.hub.Hub.hand_over`): the
        events already queued are delivered, then ``notice``, then the connection closes
        (``"handover"``), leaving the session open for a resume on another node. Audio and
        messages that still arrive are ignored (the client re-sends the audio there). False
        when the session is ending anyway (``session.end`` came, or the connection closes)."""
        if self._closing or self._ending or self.queue is None:
            return False
        self._closing = True  # nothing else closes this connection now
        self._handover = notice
        self.held, self.session = None, None  # release() leaves the session alone
        if self._watch is not None:
            self._watch.dispose()
            self._watch = None
        self.queue.seal()  # the forwarder delivers what is queued, then the notice
        self._spawn(self._cut_after(HANDOVER_DELIVERY_S))
        return True

    async def _cut_after(self, seconds: float) -> None:
        """A hand-over's delivery is bounded: a forwarder still stuck on its client (or on a
        socket whose writer stalled) then is stopped and the connection closed without the
        notice — its client resumes as after a drop. (Cancelled by :meth:`release`.)"""
        await asyncio.sleep(seconds)
        forwarder = self._forwarder
        if forwarder is not None and forwarder.done():
            return  # delivered and closed
        if forwarder is not None:
            forwarder.cancel()
        self.log.warning("hand-over notice not delivered in time: closing")
        if self._abandon is not None:
            self._abandon()
        await self._close("handover")

    async def _update(self, message: UpdateMessage) -> None:
        """``session.update``: the ``session.updated`` confirmation travels the session's own
        stream (in order with its transcripts), so the forwarder delivers it."""
        session = self.session
        if session is None or session.state is not State.OPEN or self._ending:
            await self.send_error(
                HubError("bad_message", "no open session to update: send session.start first")
            )
            return
        try:
            self.hub.update(session, message.config)
        except HubError as exc:
            await self.send_error(exc)

    async def _end(self) -> None:
        session = self.session
        if session is None:
            await self.send_error(HubError("bad_message", "no session to end: send session.start first"))
            return
        # The forwarder delivers the flushed finals and session.closed, then closes. Audio that
        # arrives before the end task runs is refused (a buffered socket does not yield).
        self._ending = True
        self._spawn(session.end())

    def _after_event(self, event: Event) -> None:
        """Runs after the queue took ``event`` (subscribed after it): reacts to an overflow."""
        if isinstance(event, ErrorEvent) and event.fatal:
            self._fatal_code = event.code
        queue = self.queue
        if queue is not None and queue.overflowed and not self._closing:
            self._closing = True
            if self._abandon is not None:  # before any await: release() may cancel the task below
                self._abandon()
            self._spawn(self._slow_consumer())

    async def _forward(self, queue: EventQueue) -> None:
        try:
            async for event in queue:
                await self.emit(event)
        except TypeError:  # an event that cannot be encoded: a bug, not a closed socket
            self.log.exception("an event could not be encoded: closing")
            await self._close_once("internal_error")
            return
        except (ConnectionError, RuntimeError) as exc:  # the socket went away under us
            self.log.debug("forwarding stopped", error=repr(exc))
            return
        if self._handover is not None:
            await self._say_handover(self._handover)
        elif not queue.overflowed:  # on overflow, _slow_consumer closes
            await self._close_once(self._fatal_code)

    async def _say_handover(self, notice: SessionHandover) -> None:
        """After the queued events: tell the client where to resume, then close."""
        try:
            await asyncio.wait_for(self.emit(notice), SEND_TIMEOUT_ON_CLOSE)
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            self.log.debug("hand-over notice not delivered", error=repr(exc))
        else:
            self.log.info("session handed over", resume_from_bytes=notice.resume_from_bytes)
        await self._close("handover")

    async def _slow_consumer(self) -> None:
        self.log.warning("slow consumer: closing", queued=len(self.queue or ()))
        if self.session is not None:
            self.session.close("slow_consumer")
        forwarder = self._forwarder
        if forwarder is not None and forwarder is not asyncio.current_task():
            forwarder.cancel()
        if not self._sent_slow_consumer:
            try:
                await asyncio.wait_for(self.emit(SLOW_CONSUMER), SEND_TIMEOUT_ON_CLOSE)
            except (TimeoutError, ConnectionError, RuntimeError):
                pass
        await self._close("slow_consumer")

    # ------------------------------------------------------------------ output

    async def emit(self, event: Event) -> None:
        """Send one message; sends are serialized so frames never interleave."""
        async with self._send_lock:
            await self._send(event)
            if event is SLOW_CONSUMER:
                self._sent_slow_consumer = True

    async def _close_once(self, code: str | None) -> None:
        if self._closing:
            return
        self._closing = True
        await self._close(code)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ lifecycle

    async def wait_finished(self) -> None:
        """Returns once the connection was released."""
        await asyncio.shield(self._finished)

    async def shutdown(self) -> None:
        """Close a connection the graceful shutdown found still open."""
        if not self._closing:
            self._closing = True
            try:
                await self._close("shutdown")
            except (ConnectionError, RuntimeError):
                pass

    def release(self, *, dropped: bool = False) -> None:
        """The transport's ``finally``: stop forwarding, close the session. Idempotent.

        ``dropped``: the client vanished without saying goodbye (no close frame / disconnect
        packet). A resumable session is then detached for the resume window instead."""
        closed_by_us = self._closing
        self._closing = True
        for task in (self._forwarder, *self._tasks):
            if task is not None and not task.done() and task is not asyncio.current_task():
                task.cancel()
        self._stop_delivery()
        held, self.held = self.held, None
        if held is not None and dropped and not closed_by_us:
            self.hub.resumes.detach(held, self)
            self.log.info("connection dropped: session detached for resume")
        else:
            if self.session is not None:
                self.session.close("disconnected")
            if held is not None:
                self.hub.resumes.forget(held, self)
        if not self._finished.done():
            self._finished.set_result(None)

    def _stop_delivery(self) -> None:
        forwarder = self._forwarder
        if forwarder is not None and not forwarder.done() and forwarder is not asyncio.current_task():
            forwarder.cancel()
        if self._watch is not None:
            self._watch.dispose()
            self._watch = None
        if self.queue is not None:
            self.queue.close()
