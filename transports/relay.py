"""One connection of a compatible streaming API (Deepgram, OpenAI Realtime) on hub sessions.

The native transports speak the hub's contract through
:class:`~asrhub.transports.streaming.StreamConnection`; the compatible APIs need two things it
does not have: *flush now and keep going* (Deepgram ``Finalize``, OpenAI
``input_audio_buffer.commit`` / ``.clear``), and their own message vocabulary. A
:class:`Relay` gives both on ordinary hub sessions — same pipeline, engine pool, limits, auth
and metrics — and leaves the wording to the transport::

    client audio ──feed──▶ session 1 ──flush──▶ (finals delivered) ──feed──▶ session 2 …
    events:        deliver(event, offset): offset = stream seconds of the sessions before

* ``open`` is synchronous (``Hub.open``): a refused session (``capacity``,
  ``unknown_provider``) raises :class:`~asrhub.errors.HubError` before anything is sent, so a
  transport can still answer in its API's handshake error;
* ``feed`` awaits ``session.feed`` (backpressure reaches the client's TCP stream), opening the
  next session first when the last one was flushed;
* ``flush`` ends the current session (every buffered utterance gets its final) and returns once
  its events were delivered; the next session's stream times continue after it. A flush needs a
  constant byte rate to know where the stream stands (raw PCM); on a container stream
  (``bytes_per_second`` None) the first flush seals the stream: more audio is refused;
* ``clear`` drops the current session's buffered audio the same way (``Session.close``);
* each session's events go through a bounded :class:`~asrhub.session.delivery.EventQueue` to one
  forwarder task; on overflow the session is closed with ``slow_consumer`` and ``abandon()``
  lets the transport cut a socket the client no longer reads;
* :meth:`release` (the transport's ``finally``) closes whatever is open. Idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from reactivex.abc import DisposableBase

from asrhub.errors import HubError
from asrhub.frames import Event
from asrhub.hub import Hub
from asrhub.logging import get_logger
from asrhub.session.delivery import EventQueue
from asrhub.session.session import Session

log = get_logger("asrhub.transports")

Deliver = Callable[[Event, float], Awaitable[None]]


class Relay:
    def __init__(
        self,
        hub: Hub,
        *,
        transport: str,
        key: str | None,
        config: Mapping[str, Any],
        deliver: Deliver,
        bytes_per_second: float | None,
        abandon: Callable[[], None] = lambda: None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.hub = hub
        self.transport = transport
        self.key = key
        self.config = dict(config)
        self.bytes_per_second = bytes_per_second
        self.session: Session | None = None
        self.offset = 0.0
        """Stream seconds of the sessions before the current one."""
        self.flushing = False
        """True while a flush delivers the ended session's events (it is not the stream's end)."""
        self.sealed = False
        self.overflowed = False
        self._deliver = deliver
        self._abandon = abandon
        self._close = close
        self._queue: EventQueue | None = None
        self._watch: DisposableBase | None = None
        self._forwarder: asyncio.Task[None] | None = None
        self._bytes = 0
        loop = asyncio.get_running_loop()
        self._finished = loop.create_future()
        self._made_at = self._waiting_since = self._closed_at = loop.time()
        self._opened = False

    # ------------------------------------------------------------------ sessions

    async def open(self) -> Session:
        """Open the next session (raises :class:`HubError`: ``capacity``, ``unknown_provider``…),
        after taking a cluster-wide slot when the hub is part of a cluster."""
        session = await self.hub.open_async(self.config, key=self.key, transport=self.transport)
        self.session, self._bytes, self._opened = session, 0, True
        self._queue = session.queue(self.hub.limits.subscriber_queue)
        self._watch = session.events.subscribe(on_next=self._after_event)
        self._forwarder = asyncio.create_task(self._forward(self._queue, self.offset))
        return session

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """Use ``config`` from the next session on (validated now: raises :class:`HubError`)."""
        self.hub.resolve_config(config)
        self.config = dict(config)

    def update(self, patch: Mapping[str, Any]) -> None:
        """Change what may change mid-stream (``session.update``: language, key terms, …) on
        the open session, from its next utterance, and on every later one. Raises
        :class:`HubError`."""
        config = {**self.config, **patch}
        self.hub.resolve_config(config)
        if self.session is not None and not self.session.closed:
            self.hub.update(self.session, patch)
        self.config = config

    @property
    def position(self) -> float:
        """Stream seconds received so far (raw PCM only; else the start of the current session)."""
        if self.bytes_per_second:
            return self.offset + self._bytes / self.bytes_per_second
        return self.offset

    @property
    def buffered_bytes(self) -> int:
        """Audio bytes fed to the current session."""
        return self._bytes if self.session is not None else 0

    async def feed(self, data: bytes) -> None:
        """Append audio (in pieces of at most ``limits.max_frame_bytes``); returns once the
        session can take more. Raises :class:`HubError`."""
        if self.sealed:
            raise HubError(
                "bad_message", "audio after the stream was finalized (a container stream cannot continue)"
            )
        if self.session is None:
            await self.open()
        session = self.session
        assert session is not None
        step = self.hub.limits.max_frame_bytes
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            await session.feed(piece)
            self._bytes += len(piece)

    def touch(self) -> None:
        """The client is alive without audio (a keep-alive): restart the open session's idle
        clock, or (between sessions) :meth:`waiting_until`'s. Costs no task, whatever the
        session is doing (a keep-alive while ``feed`` is held back by a busy engine used to
        start one that waited with it)."""
        session = self.session
        if session is not None and not session.closed:
            session.touch()
        else:
            self._waiting_since = asyncio.get_running_loop().time()

    def waiting_until(self, start_s: float, idle_s: float) -> float | None:
        """When (loop time) a connection without an open session must have said something
        useful: ``start_s`` after the relay was made if no session was ever open, else
        ``idle_s`` after the last one ended (or the last :meth:`touch`); None while a session is
        open (its own idle clock rules)."""
        session = self.session
        if session is not None and not session.closed:
            return None
        if not self._opened:
            return self._made_at + start_s
        return max(self._waiting_since, self._closed_at) + idle_s

    async def flush(self) -> str | None:
        """End the current session and deliver all its events; the stream goes on after it.

        Returns the session's close reason (None: there was no session)."""
        return await self._end(drop=False)

    async def clear(self) -> str | None:
        """Drop the current session's buffered audio (no finals for it); the stream goes on."""
        return await self._end(drop=True)

    async def _end(self, *, drop: bool) -> str | None:
        session, forwarder = self.session, self._forwarder
        if session is None:
            return None
        self.flushing = True
        try:
            if drop:
                session.close("cleared")
                reason = "cleared"
            else:
                reason = await session.end()
            if forwarder is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await forwarder
        finally:
            self.flushing = False
        self._detach()
        if self.bytes_per_second:
            self.offset += self._bytes / self.bytes_per_second
        else:
            self.sealed = True
        self.session = None
        self._closed_at = asyncio.get_running_loop().time()
        return reason

    async def finish(self) -> str | None:
        """The client's end of stream: flush, deliver everything, and take no more audio."""
        session, forwarder = self.session, self._forwarder
        self.sealed = True
        if session is None:
            return None
        reason = await session.end()
        if forwarder is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await forwarder
        return reason

    # ------------------------------------------------------------------ delivery

    async def _forward(self, queue: EventQueue, offset: float) -> None:
        try:
            async for event in queue:
                await self._deliver(event, offset)
        except TypeError:  # an event that cannot be encoded: a bug, not a closed socket
            log.exception("an event could not be encoded", transport=self.transport)
            if self.session is not None:
                self.session.close("internal_error")
        except (ConnectionError, RuntimeError) as exc:  # the socket went away under us
            log.debug("forwarding stopped", transport=self.transport, error=repr(exc))

    def _after_event(self, _event: Event) -> None:
        queue = self._queue
        if queue is not None and queue.overflowed and not self.overflowed:
            self.overflowed = True
            log.warning("slow consumer: closing", transport=self.transport)
            self._abandon()
            if self.session is not None:
                self.session.close("slow_consumer")

    def _detach(self) -> None:
        if self._watch is not None:
            self._watch.dispose()
            self._watch = None
        if self._queue is not None:
            self._queue.close()
            self._queue = None
        self._forwarder = None

    # ------------------------------------------------------------------ lifecycle

    def release(self) -> None:
        """The transport's ``finally``: stop delivering, close the session. Idempotent."""
        forwarder = self._forwarder
        if forwarder is not None and not forwarder.done() and forwarder is not asyncio.current_task():
            forwarder.cancel()
        self._detach()
        if self.session is not None:
            self.session.close("disconnected")
        if not self._finished.done():
            self._finished.set_result(None)

    async def wait_finished(self) -> None:
        """Returns once the connection was released (graceful shutdown waits on it)."""
        await asyncio.shield(self._finished)

    async def shutdown(self) -> None:
        """Close a connection the graceful shutdown found still open."""
        if self._close is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._close()
