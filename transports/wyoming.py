"""Wyoming (Home Assistant's voice protocol) over TCP (``server.wyoming_port``), with the
``wyoming`` package's event types and its :class:`~wyoming.server.AsyncEventHandler`, on
ordinary hub sessions (transport label ``wyoming``).

Speech to text, as Home Assistant drives it::

    client: transcribe ── audio-start ── audio-chunk … ──────────────── audio-stop
    hub:                  transcript-start ── transcript-chunk … ──────── transcript ── transcript-stop

* ``transcribe`` (optional ``name`` = a hub provider or model, ``language``,
  ``transcript_names``/``transcript_terms`` → the session's key terms) then ``audio-start``
  (rate, width 2, channels) opens a session; each ``audio-chunk`` is awaited into
  ``session.feed`` before the next event is read (a busy engine becomes TCP backpressure);
  ``audio-stop`` ends the session: every utterance's final, then ``transcript`` with their text
  joined, then ``transcript-stop``.
* streaming: ``transcript-start`` at ``audio-start``, then ``transcript-chunk`` events as the
  text firms up (see :class:`~asrhub.transports.wyoming_info.AgreedText`).

Wake word::

    client: detect ── audio-start ── audio-chunk … ── (audio-stop | hang up)
    hub:                                  detection …        not-detected

* ``detect`` (``names``: wake words; none = all) then audio runs a session with provider
  ``none`` and the hub's wake-word operator; every ``wakeword.detected`` is a ``detection``
  (``timestamp`` in ms of stream time); ``audio-stop`` without one is ``not-detected``. Home
  Assistant hangs up after the first detection: the session closes with the connection.

``describe`` → ``info`` (:func:`~asrhub.transports.wyoming_info.describe`); ``ping`` → ``pong``.
Problems are Wyoming ``error`` events with the hub's error code (``unknown_provider``,
``bad_audio``, ``capacity``, …). Admission, and what a hostile client meets (docs/security.md):

* Wyoming has no authentication: it listens on ``server.wyoming_host`` (loopback by default);
  each connection passes the door's gate (connection caps, by peer address) and the server
  runs at most ``server.wyoming_max_sessions`` sessions at once (one more: ``capacity``), so
  keyless Wyoming clients cannot take the hub's sessions from keyed ones;
* the first event must come within ``limits.start_timeout_s``, and while no session is open
  each next one within ``limits.idle_timeout_s`` (an open session has its own idle clock):
  else an ``error`` (``timeout``) and the connection is closed;
* an event's header line and JSON data may be at most 64 KiB each, its payload at most
  ``limits.max_frame_bytes``; a larger one, a header that is not a JSON object, a length that
  is not a non-negative integer or JSON nested too deep gets an ``error`` (``too_large`` /
  ``bad_message``) and the connection is closed before the rest is read
  (:mod:`~asrhub.transports.wyoming_wire`); a well-framed event with wrong fields gets a
  ``bad_message`` error and the connection goes on;
* a client that does not take what the hub writes within ``write_timeout_s`` (as started by
  ``asrhub serve``: ``server.heartbeat_s``) is dropped with a reset.

A client that disconnects mid-audio closes its session at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable
from typing import Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.wake import Detect, Detection, NotDetected

from asrhub import frames
from asrhub.config import MAX_KEYTERM_CHARS, MAX_KEYTERMS
from asrhub.door import Door, Ticket
from asrhub.errors import HubError
from asrhub.hub import NO_PROVIDER, Hub
from asrhub.logging import get_logger
from asrhub.session.delivery import EventQueue
from asrhub.session.session import Session, State

from .common import CLOSE_BOUND_S, discard_on_close, reset
from .model_choice import model_for_language
from .tcp_gate import peer_address
from .wyoming_info import AgreedText, describe
from .wyoming_wire import READ_LIMIT, read_event

log = get_logger("asrhub.transports")

TRANSPORT = "wyoming"
WAKE_THRESHOLD = 0.5


WRITE_TIMEOUT_S = 10.0
"""How long one write to a client may wait for it to read; then it is dropped."""
SEND_BUFFER = 64 * 1024
"""Kernel send buffer of a Wyoming socket (events are small; audio only comes in)."""
OUTBOUND_BUFFER = 16 * 1024
"""Unsent bytes a connection may hold before a write waits for the client to read."""


class WyomingHandler(AsyncEventHandler):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        hub: Hub,
        door: Door,
        server: WyomingServer,
        wake_words: Callable[[], Iterable[str]],
    ) -> None:
        super().__init__(reader, writer)
        self.hub = hub
        self.door = door
        self.server = server
        self.wake_words = wake_words
        self._transcribe: Transcribe | None = None
        self._detect: Detect | None = None
        self.session: Session | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._heard = False

    # ------------------------------------------------------------------ connection

    def _read_timeout(self) -> float | None:
        """The start deadline before the first event; the idle one while no session is open
        (an open session's silence is its own idle clock's)."""
        if not self._heard:
            return self.door.start_timeout_s
        session = self.session
        if session is not None and not session.closed:
            return None
        return self.door.idle_timeout_s

    async def run(self) -> None:
        """Read events until the client leaves, errs or says nothing in time."""
        try:
            while True:
                timeout = self._read_timeout()
                try:
                    async with asyncio.timeout(timeout):
                        event = await read_event(self.reader, max_payload=self.hub.limits.max_frame_bytes)
                except TimeoutError:
                    what = "event" if not self._heard else "event while no session is open"
                    await self._error(HubError("timeout", f"no {what} within {timeout:g} s", fatal=True))
                    break
                except HubError as exc:  # unreadable framing: say why, then close
                    await self._error(exc)
                    break
                if event is None:
                    break
                self._heard = True
                if not await self.handle_event(event):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            await self.disconnect()
            self.writer.close()

    async def disconnect(self) -> None:
        if self.forwarder is not None and not self.forwarder.done():
            self.forwarder.cancel()
        if self.session is not None:
            self.session.close("disconnected")

    async def write_event(self, event: Event) -> None:
        """One event to the client; a client that does not take it within
        :attr:`WyomingServer.write_timeout_s` is cut (ConnectionError)."""
        async with self._write_lock:
            try:
                async with asyncio.timeout(self.server.write_timeout_s):
                    await super().write_event(event)
            except TimeoutError:
                log.info("wyoming client reads nothing: dropped", peer=peer_address(self.writer.transport))
                reset(self.writer.transport)  # type: ignore[arg-type]
                raise ConnectionResetError("the client does not read") from None

    async def _error(self, error: HubError) -> None:
        with contextlib.suppress(ConnectionError):
            await self.write_event(Error(text=error.message, code=error.code).event())

    # ------------------------------------------------------------------ client → hub

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._handle(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # well framed, wrong fields
            why = f"{type(exc).__name__}: {exc}"[:200]
            await self._error(HubError("bad_message", f"event {event.type!r} is malformed ({why})"))
            return True

    async def _handle(self, event: Event) -> bool:
        if AudioChunk.is_type(event.type):
            return await self._audio(AudioChunk.from_event(event).audio)
        if Transcribe.is_type(event.type):
            self._transcribe, self._detect = Transcribe.from_event(event), None
        elif Detect.is_type(event.type):
            self._detect, self._transcribe = Detect.from_event(event), None
        elif AudioStart.is_type(event.type):
            await self._start(AudioStart.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._stop()
        elif Describe.is_type(event.type):
            await self.write_event(describe(self.hub, self.wake_words()).event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=Ping.from_event(event).text).event())
        return True

    async def _audio(self, data: bytes) -> bool:
        session = self.session
        if session is None or session.state is not State.OPEN or not data:
            return True  # before audio-start, after a failure or the end: nothing to feed
        try:
            await session.feed(data)
        except HubError as exc:
            await self._error(exc)
        return True

    async def _start(self, start: AudioStart) -> None:
        if self.session is not None:  # a new audio-start: the previous request is over
            await self.disconnect()
            self.session = None
        if start.width != 2:
            await self._error(
                HubError("bad_audio", f"audio width {start.width}: send 16-bit samples (width 2)")
            )
            return
        audio = {"encoding": "pcm_s16le", "sample_rate": start.rate, "channels": start.channels}
        if self.server.sessions_open() >= self.server.max_sessions:
            limit = self.server.max_sessions
            await self._error(HubError("capacity", f"wyoming is at its limit of {limit} sessions"))
            return
        self.hub.usage.request(None)  # a Wyoming session is a request (no key: anonymous)
        try:
            config, wake = self._config(audio)
            session = await self.hub.open_async(config, transport=TRANSPORT)  # cluster-wide limits too
        except HubError as exc:
            await self._error(exc)
            return
        self.session = session
        queue = session.queue(self.hub.limits.subscriber_queue)
        if wake:
            self.forwarder = asyncio.create_task(self._forward_detections(queue))
        else:
            language = config.get("language")
            await self.write_event(TranscriptStart(language=language).event())
            self.forwarder = asyncio.create_task(self._forward_transcript(queue, language))

    def _config(self, audio: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if self._detect is not None:
            available = set(self.wake_words())
            names = list(self._detect.names or sorted(available))
            unknown = [n for n in names if n not in available]
            if unknown or not names:
                known = ", ".join(sorted(available)) or "(none installed)"
                raise HubError("bad_message", f"unknown wake word {', '.join(unknown)}: this hub has {known}")
            wakeword = {"enabled": True, "names": names, "threshold": WAKE_THRESHOLD}
            return {"provider": NO_PROVIDER, "audio": audio, "wakeword": wakeword, "partials": False}, True
        request = self._transcribe or Transcribe()
        config: dict[str, Any] = {"audio": audio, "partials": True, "word_timestamps": False}
        provider, model = self.hub.resolve_model(request.name)  # a provider, provider:model or model
        if provider is not None:
            config["provider"] = provider
        language = request.language.replace("_", "-").split("-", 1)[0].lower() if request.language else None
        model = model_for_language(self.hub, provider, model, language)
        if model is not None:
            config["model"] = model
        if language:
            config["language"] = language
        terms = [
            t.strip()[:MAX_KEYTERM_CHARS]
            for t in [*(request.transcript_names or ()), *(request.transcript_terms or ())]
        ]
        if any(terms):  # names first: they take priority
            config["keyterms"] = list(dict.fromkeys(t for t in terms if t))[:MAX_KEYTERMS]
        return config, False

    async def _stop(self) -> None:
        session = self.session
        if session is None:
            return
        if session.state is State.OPEN:
            await session.end()
        if self.forwarder is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.forwarder  # everything is sent before the next request is read
        self.session = None

    # ------------------------------------------------------------------ hub → client

    async def _forward_transcript(self, queue: EventQueue, language: str | None) -> None:
        chunks = AgreedText()
        finals: list[str] = []
        failed = False
        try:
            async for event in queue:
                chunk: str | None = None
                if isinstance(event, frames.PartialTranscript):
                    chunk = chunks.partial(event.segment_id, event.text, event.stable)
                elif isinstance(event, frames.FinalTranscript):
                    chunk = chunks.final(event.segment_id, event.text)
                    if event.text.strip():
                        finals.append(event.text.strip())
                    language = language or event.language
                elif isinstance(event, frames.ErrorEvent):
                    await self._error(HubError(event.code, event.message))
                    failed = failed or event.fatal
                if chunk:
                    await self.write_event(TranscriptChunk(text=chunk).event())
            if not failed:
                await self.write_event(Transcript(text=" ".join(finals), language=language).event())
            await self.write_event(TranscriptStop().event())
        except ConnectionError:
            pass
        finally:
            queue.close()

    async def _forward_detections(self, queue: EventQueue) -> None:
        detected = False
        try:
            async for event in queue:
                if isinstance(event, frames.WakeWordDetected):
                    detected = True
                    timestamp = round(event.t * 1000)
                    await self.write_event(Detection(name=event.name, timestamp=timestamp).event())
                elif isinstance(event, frames.ErrorEvent):
                    await self._error(HubError(event.code, event.message))
            if not detected:
                await self.write_event(NotDetected().event())
        except ConnectionError:
            pass
        finally:
            queue.close()


class WyomingServer:
    """A TCP listener running one :class:`WyomingHandler` per admitted connection."""

    def __init__(
        self,
        hub: Hub,
        door: Door,
        *,
        wake_words: Callable[[], Iterable[str]] = tuple,
        max_sessions: int = 16,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.hub = hub
        self.door = door
        self.wake_words = wake_words
        self.max_sessions = max_sessions
        self.write_timeout_s = write_timeout_s
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], WyomingHandler] = {}

    @property
    def connections(self) -> int:
        return len(self._handlers)

    def sessions_open(self) -> int:
        return sum(1 for h in self._handlers.values() if h.session is not None and not h.session.closed)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        try:
            ticket: Ticket = self.door.gate.enter(peer_address(transport), "wyoming")
        except HubError as exc:
            await self._refuse(writer, exc)
            return
        _bound_buffers(writer)
        handler = WyomingHandler(
            reader, writer, hub=self.hub, door=self.door, server=self, wake_words=self.wake_words
        )
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = handler
        try:
            await handler.run()
        finally:
            self._handlers.pop(task, None)
            ticket.leave()

    async def _refuse(self, writer: asyncio.StreamWriter, error: HubError) -> None:
        """At a connection cap: one ``error`` event (if the client takes it at once), then close."""
        discard_on_close(writer.transport)
        try:
            async with asyncio.timeout(1.0):
                await async_write_event(Error(text=error.message, code=error.code).event(), writer)
        except (TimeoutError, ConnectionError):
            pass
        writer.transport.abort()

    async def wait_idle(self) -> None:
        """Returns once no connection is open."""
        while self._handlers:
            await asyncio.wait(list(self._handlers))

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        try:
            self._server = await asyncio.start_server(
                self._connected, host, port, reuse_port=reuse_port or None, limit=READ_LIMIT
            )
        except OSError as exc:
            raise RuntimeError(f"cannot listen for Wyoming on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("wyoming listening", host=host, port=self.port)
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        """After the hub's flush: give connections ``grace_s`` to send their last transcripts,
        then close them all at once; what is not closed within :data:`CLOSE_BOUND_S` is cut."""
        if self._server is not None:
            self._server.close()
        sending = [
            h.forwarder for h in self._handlers.values() if h.forwarder is not None and not h.forwarder.done()
        ]
        if sending:
            await asyncio.wait(sending, timeout=grace_s)
        handlers = dict(self._handlers)
        for handler in handlers.values():
            await handler.stop()  # closes the writer and ends the read loop; does not wait
        if handlers:
            _done, late = await asyncio.wait(list(handlers), timeout=CLOSE_BOUND_S)
            for task in late:
                reset(handlers[task].writer.transport)  # type: ignore[arg-type]
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self._server is not None:
            await self._server.wait_closed()


def _bound_buffers(writer: asyncio.StreamWriter) -> None:
    """Small outbound buffers: a client that stops reading blocks a write within a few KB,
    so :attr:`WyomingServer.write_timeout_s` finds it."""
    transport = writer.transport
    transport.set_write_buffer_limits(high=OUTBOUND_BUFFER)  # type: ignore[attr-defined]
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # closed: uvloop's pseudo-socket says ValueError
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
