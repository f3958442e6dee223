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
``bad_audio``, ``capacity``, …). An event may carry at most ``limits.max_frame_bytes`` of
payload and 64 KiB of data: a larger one gets ``too_large`` and the connection is closed, before
it is read. Wyoming has no authentication: the API keys do not apply here (listen on a trusted
interface). A client that disconnects mid-audio closes its session at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_read_event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.wake import Detect, Detection, NotDetected

from asrhub import frames
from asrhub.config import MAX_KEYTERM_CHARS, MAX_KEYTERMS
from asrhub.errors import HubError
from asrhub.hub import NO_PROVIDER, Hub
from asrhub.logging import get_logger
from asrhub.protocol import MAX_MESSAGE_BYTES
from asrhub.session.delivery import EventQueue
from asrhub.session.session import Session, State

from .model_choice import model_for_language
from .wyoming_info import AgreedText, describe

log = get_logger("asrhub.transports")

TRANSPORT = "wyoming"
WAKE_THRESHOLD = 0.5


class _BoundedReader:
    """The connection's reader as :func:`wyoming.event.async_read_event` sees it, refusing a
    data or payload length over its bound before reading it (the library would buffer any)."""

    def __init__(self, reader: asyncio.StreamReader, max_payload: int) -> None:
        self._reader = reader
        self.max_payload = max_payload
        self.refused: int | None = None

    async def readline(self) -> bytes:
        return await self._reader.readline()

    async def readexactly(self, n: int) -> bytes:
        if n > self.max_payload:
            self.refused = n
            raise ValueError(f"event of {n} bytes")  # async_read_event: None, the end
        return await self._reader.readexactly(n)


class WyomingHandler(AsyncEventHandler):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        hub: Hub,
        wake_words: Callable[[], Iterable[str]],
    ) -> None:
        super().__init__(reader, writer)
        self.hub = hub
        self.wake_words = wake_words
        self._bounded = _BoundedReader(reader, max(hub.limits.max_frame_bytes, MAX_MESSAGE_BYTES))
        self._transcribe: Transcribe | None = None
        self._detect: Detect | None = None
        self.session: Session | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        """The library's loop, reading through the bounded reader."""
        try:
            while True:
                event = await async_read_event(self._bounded)  # type: ignore[arg-type]
                if event is None:
                    if self._bounded.refused is not None:
                        limit = self._bounded.max_payload
                        message = f"event of {self._bounded.refused} bytes exceeds the limit of {limit}"
                        await self._error(HubError("too_large", message))
                    break
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
        async with self._write_lock:
            await super().write_event(event)

    async def _error(self, error: HubError) -> None:
        with contextlib.suppress(ConnectionError):
            await self.write_event(Error(text=error.message, code=error.code).event())

    # ------------------------------------------------------------------ client → hub

    async def handle_event(self, event: Event) -> bool:
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
                    chunk = chunks.partial(event.segment_id, event.text)
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
    """A TCP listener running one :class:`WyomingHandler` per connection."""

    def __init__(self, hub: Hub, *, wake_words: Callable[[], Iterable[str]] = tuple) -> None:
        self.hub = hub
        self.wake_words = wake_words
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: dict[asyncio.Task[None], WyomingHandler] = {}

    @property
    def connections(self) -> int:
        return len(self._handlers)

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = WyomingHandler(reader, writer, hub=self.hub, wake_words=self.wake_words)
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = handler
        try:
            await handler.run()
        finally:
            self._handlers.pop(task, None)

    async def wait_idle(self) -> None:
        """Returns once no connection is open."""
        while self._handlers:
            await asyncio.wait(list(self._handlers))

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        try:
            self._server = await asyncio.start_server(
                self._connected, host, port, reuse_port=reuse_port or None
            )
        except OSError as exc:
            raise RuntimeError(f"cannot listen for Wyoming on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("wyoming listening", host=host, port=self.port)
        return self.port

    async def stop(self, grace_s: float = 5.0) -> None:
        """After the hub's flush: give connections ``grace_s`` to send their last transcripts,
        then close them."""
        if self._server is not None:
            self._server.close()
        sending = [
            h.forwarder for h in self._handlers.values() if h.forwarder is not None and not h.forwarder.done()
        ]
        if sending:
            await asyncio.wait(sending, timeout=grace_s)
        for handler in list(self._handlers.values()):
            await handler.stop()
        if self._server is not None:
            await self._server.wait_closed()
