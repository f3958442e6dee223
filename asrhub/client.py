"""A Python client for the hub's WebSocket endpoint (``/v1/stream``).

Stream a file, raw bytes or any async iterator of audio bytes and iterate over the hub's
events as they arrive::

    async for event in stream("ws://127.0.0.1:8080/v1/stream", "talk.wav", realtime=True):
        if isinstance(event, FinalTranscript):
            print(event.text)

or drive a session by hand::

    async with await HubStream.connect(url, config={"language": "en"}) as hub:
        await hub.send(pcm_bytes)          # returns once the socket took it (backpressure)
        await hub.end()
        async for event in hub: ...

Files: WAV (PCM 16-bit) is sent as ``pcm_s16le`` at its own rate and channel count, with no
decoding; any other file is decoded locally with PyAV to 16 kHz mono ``pcm_s16le``. With
``realtime=True`` audio is paced at the speed it plays; otherwise it goes as fast as the hub
takes it — every send awaits the socket, and the hub reads the next frame only when the
session can take it, so a busy engine slows the client instead of queueing in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from asrhub.errors import HubError
from asrhub.frames import (
    EVENT_TYPES,
    ErrorEvent,
    Event,
    FinalTranscript,
    SessionClosed,
    SessionHandover,
    SessionResumed,
    SessionStarted,
    event_from_dict,
)

Source = str | Path | bytes | AsyncIterable[bytes]


class HubStream:
    """One streaming session over one WebSocket."""

    def __init__(
        self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse, own_http: bool
    ) -> None:
        self._http = http
        self._ws = ws
        self._own_http = own_http
        self.started: SessionStarted | None = None
        self.session_id: str | None = None
        self.config: dict[str, Any] = {}
        self.closed_reason: str | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        config: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        http: aiohttp.ClientSession | None = None,
        heartbeat: float | None = 20.0,
        resume: bool = False,
    ) -> HubStream:
        """Open the WebSocket, start a session and wait for ``session.started``. ``resume``:
        ask for a resume token (``self.started.resume_token``; see :meth:`reconnect`).

        Raises :class:`~asrhub.errors.HubError` when the hub refuses (``unauthorized``,
        ``capacity``, ``unknown_provider``, …).
        """
        own = http is None
        http = http or aiohttp.ClientSession()
        try:
            ws = await _open_ws(http, url, api_key, heartbeat)
        except BaseException:
            if own:
                await http.close()
            raise
        stream = cls(http, ws, own)
        start: dict[str, Any] = {"type": "session.start", "config": dict(config or {})}
        if resume:
            start["resume"] = True
        await ws.send_str(json.dumps(start))
        while True:
            event = await stream.receive()
            if event is None:
                await stream.close()
                message = "the hub closed the connection before session.started"
                raise HubError("bad_message", message, fatal=True)
            if isinstance(event, SessionStarted):
                stream.started = event
                stream.session_id = event.session_id
                stream.config = event.config
                return stream
            if isinstance(event, ErrorEvent):
                await stream.close()
                raise HubError(event.code, event.message, fatal=True)

    async def reconnect(
        self,
        url: str,
        *,
        last_segment_id: int | None,
        audio_from_bytes: int = 0,
        api_key: str | None = None,
        heartbeat: float | None = 20.0,
    ) -> SessionResumed:
        """After a dropped connection: a new WebSocket (to ``url``: the same hub, or any node of
        a cluster) continues the session with ``session.resume``. Returns ``session.resumed``;
        the missed finals follow on :meth:`receive`. The caller re-sends its audio from
        ``resumed.resume_from_bytes`` (see :class:`AudioLedger`)."""
        token = self.started.resume_token if self.started is not None else None
        if token is None:
            raise HubError(
                "resume_failed",
                "the session has no resume token (it was not started with resume=True, or the "
                "hub offers no resume)",
            )
        with contextlib.suppress(Exception):
            await self._ws.close()
        self._ws = await _open_ws(self._http, url, api_key, heartbeat)
        await self._ws.send_str(
            json.dumps(
                {
                    "type": "session.resume",
                    "token": token,
                    "last_segment_id": last_segment_id,
                    "audio_from_bytes": audio_from_bytes,
                }
            )
        )
        event = await self.receive()
        if isinstance(event, SessionResumed):
            return event
        if isinstance(event, ErrorEvent):
            raise HubError(event.code, event.message, fatal=True)
        raise HubError("resume_failed", f"expected session.resumed, got {event!r}", fatal=True)

    async def send(self, audio: bytes) -> None:
        """One binary audio frame; returns once the socket has taken it."""
        await self._ws.send_bytes(audio)

    async def end(self) -> None:
        """``session.end``: the hub flushes the finals, then sends ``session.closed``."""
        if not self._ws.closed:
            await self._ws.send_str('{"type": "session.end"}')

    async def ping(self, id: Any = None) -> None:
        await self._ws.send_str(json.dumps({"type": "ping", "id": id}))

    async def receive(self) -> Event | None:
        """The next event, or None once the connection closed."""
        while True:
            msg = await self._ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                if not isinstance(data, dict) or data.get("type") not in EVENT_TYPES:
                    continue  # a newer hub's message type: skip it
                event = event_from_dict(data)
                if isinstance(event, SessionClosed):
                    self.closed_reason = event.reason
                return event
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while (event := await self.receive()) is not None:
            yield event
            if isinstance(event, SessionClosed):
                return

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self) -> None:
        await self._ws.close()
        if self._own_http:
            await self._http.close()

    async def __aenter__(self) -> HubStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def _open_ws(
    http: aiohttp.ClientSession, url: str, api_key: str | None, heartbeat: float | None
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return await http.ws_connect(url, headers=headers, heartbeat=heartbeat, max_msg_size=16 << 20)
    except aiohttp.WSServerHandshakeError as exc:
        code = "unauthorized" if exc.status in (401, 403) else "bad_message"
        message = f"the hub refused the connection: HTTP {exc.status} {exc.message}"
        raise HubError(code, message, fatal=True) from None


class AudioLedger:
    """The audio a resumable client still holds: its byte stream from offset ``base`` on.

    Everything sent is appended; a ``transcript.final`` confirms the audio up to its end
    (:meth:`confirm_until`), which is dropped. At most ``max_bytes`` are kept (the oldest go
    first; ``base`` says from where the ledger can re-send: ``audio_from_bytes`` of a resume)."""

    def __init__(self, audio: Mapping[str, Any], max_seconds: float = 60.0) -> None:
        width = 4 if audio.get("encoding") == "pcm_f32le" else 2
        pcm = audio.get("encoding", "pcm_s16le") in ("pcm_s16le", "pcm_f32le")
        self.frame_bytes = width * int(audio.get("channels", 1))
        self.bytes_per_second = self.frame_bytes * int(audio.get("sample_rate", 16_000)) if pcm else 0
        self.max_bytes = int(max_seconds * (self.bytes_per_second or 32_000))
        self.base = 0
        self._buffer = bytearray()

    @property
    def end(self) -> int:
        """Bytes of audio the client has produced so far (the stream's length)."""
        return self.base + len(self._buffer)

    def append(self, data: bytes) -> None:
        self._buffer += data
        excess = len(self._buffer) - self.max_bytes
        if excess > 0:
            self._drop(excess)

    def confirm_until(self, seconds: float) -> None:
        """A final ended at stream time ``seconds``: the audio before it is the hub's."""
        if self.bytes_per_second:
            offset = int(seconds * self.bytes_per_second) // self.frame_bytes * self.frame_bytes
            if offset > self.base:
                self._drop(min(offset, self.end) - self.base)

    def since(self, offset: int) -> bytes:
        """The audio from ``offset`` on (a resume's ``resume_from_bytes``)."""
        if offset < self.base:
            raise HubError(
                "resume_failed",
                f"the hub asks for audio from byte {offset}, the client holds it from {self.base}",
            )
        return bytes(self._buffer[offset - self.base :])

    def _drop(self, count: int) -> None:
        del self._buffer[:count]
        self.base += count


# --------------------------------------------------------------------------- sources


def read_audio_file(path: str | Path) -> tuple[bytes, dict[str, Any]]:
    """(PCM bytes, the ``audio`` config that describes them) for a file."""
    data = Path(path).read_bytes()
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            if w.getsampwidth() == 2 and w.getcomptype() == "NONE":
                fmt = {"encoding": "pcm_s16le", "sample_rate": w.getframerate(), "channels": w.getnchannels()}
                return w.readframes(w.getnframes()), fmt
    except (wave.Error, EOFError):
        pass
    return _decode_to_pcm16(data), {"encoding": "pcm_s16le", "sample_rate": 16_000, "channels": 1}


def _decode_to_pcm16(data: bytes) -> bytes:
    import av
    import numpy as np

    out: list[bytes] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=16_000)
        for frame in container.decode(audio=0):
            for f in resampler.resample(frame):
                out.append(np.asarray(f.to_ndarray(), dtype="<i2").tobytes())
        for f in resampler.resample(None):
            out.append(np.asarray(f.to_ndarray(), dtype="<i2").tobytes())
    return b"".join(out)


def bytes_per_second(audio: Mapping[str, Any]) -> float:
    width = 4 if audio.get("encoding") == "pcm_f32le" else 2
    return float(audio.get("sample_rate", 16_000) * audio.get("channels", 1) * width)


async def chunks(data: bytes, size: int, *, pace: float | None = None) -> AsyncIterator[bytes]:
    """Split ``data`` into frames of ``size`` bytes; with ``pace`` (bytes per second) each frame
    is released when it would have been recorded."""
    t0 = time.monotonic()
    for offset in range(0, len(data), size):
        if pace:
            delay = t0 + offset / pace - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        yield data[offset : offset + size]


async def stream(
    url: str,
    source: Source,
    *,
    config: Mapping[str, Any] | None = None,
    api_key: str | None = None,
    realtime: bool = False,
    chunk_ms: int = 100,
    http: aiohttp.ClientSession | None = None,
    resume: bool = False,
    resume_for_s: float = 30.0,
) -> AsyncIterator[Event]:
    """Stream ``source`` in one session and yield every event, ``session.started`` to
    ``session.closed``.

    ``source``: a file path, PCM bytes in the format ``config["audio"]`` declares (default
    16 kHz mono ``pcm_s16le``), or an async iterator of such bytes (a live source sets its own
    pace). ``session.end`` is sent when the source is exhausted.

    ``resume``: a resumable session. When the connection drops (no ``session.closed``), or the
    hub hands the session over because it drains (``session.handover``, then close 1012: a
    rolling restart), the client reconnects to ``url`` (retrying for ``resume_for_s``),
    resumes, yields ``session.resumed`` and the finals it missed, re-sends its audio from
    ``resume_from_bytes`` (an :class:`AudioLedger` keeps what no final confirmed yet) and goes
    on; behind a load balancer the session may continue on another node. A resume that fails
    raises (:class:`~asrhub.errors.HubError` ``resume_failed``, or the last connection error
    once ``resume_for_s`` has passed).
    """
    if resume:
        async for event in _resumable(url, source, config, api_key, realtime, chunk_ms, http, resume_for_s):
            yield event
        return
    config, frames = _frames(source, config, realtime, chunk_ms)
    hub = await HubStream.connect(url, config=config, api_key=api_key, http=http)

    async def pump() -> None:
        async for frame in frames:
            await hub.send(frame)
        await hub.end()

    async with _sending(hub, pump()) as sender_failed:
        assert hub.started is not None
        yield hub.started
        async for event in hub:
            yield event
            sender_failed()


def _frames(
    source: Source, config: Mapping[str, Any] | None, realtime: bool, chunk_ms: int
) -> tuple[dict[str, Any], AsyncIterable[bytes]]:
    """The session config (with the audio format of a file) and the frames to send: a file or
    bytes cut into ``chunk_ms`` pieces (paced in real time if asked), or the caller's iterable."""
    config = dict(config or {})
    if isinstance(source, str | Path):
        pcm, audio_format = read_audio_file(source)
        config.setdefault("audio", audio_format)
        source = pcm
    if isinstance(source, bytes):
        rate = bytes_per_second(config.get("audio") or {})
        size = max(2, int(rate * chunk_ms / 1000) // 2 * 2)
        return config, chunks(source, size, pace=rate if realtime else None)
    return config, source


async def _resumable(
    url: str,
    source: Source,
    config: Mapping[str, Any] | None,
    api_key: str | None,
    realtime: bool,
    chunk_ms: int,
    http: aiohttp.ClientSession | None,
    resume_for_s: float,
) -> AsyncIterator[Event]:
    """:func:`stream` with ``resume=True``: one sender, one receiver, a ledger of the audio."""
    config, frames = _frames(source, config, realtime, chunk_ms)
    ledger = AudioLedger(config.get("audio") or {})
    hub = await HubStream.connect(url, config=config, api_key=api_key, http=http, resume=True)
    connected = asyncio.Event()
    connected.set()
    lock = asyncio.Lock()  # the sender never interleaves with a resume's re-send
    source_done = False

    async def send(data: bytes) -> None:
        try:
            await hub.send(data)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            connected.clear()  # the receiver notices the drop and resumes

    async def pump() -> None:
        nonlocal source_done
        async for frame in frames:
            async with lock:
                ledger.append(frame)
                if connected.is_set():
                    await send(frame)
        source_done = True
        async with lock:
            if connected.is_set():
                await hub.end()

    async def resume_now(last: int | None) -> SessionResumed:
        deadline = time.monotonic() + resume_for_s
        while True:
            try:
                async with lock:
                    resumed = await hub.reconnect(
                        url, last_segment_id=last, audio_from_bytes=ledger.base, api_key=api_key
                    )
                    await send(ledger.since(resumed.resume_from_bytes))
                    if source_done:
                        await hub.end()
                    connected.set()
                    return resumed
            except (OSError, aiohttp.ClientError, HubError) as exc:
                if isinstance(exc, HubError) and exc.code in ("resume_failed", "unauthorized"):
                    raise
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    last_segment: int | None = None
    async with _sending(hub, pump()) as sender_failed:
        assert hub.started is not None
        yield hub.started
        while True:
            event = await hub.receive()
            if event is None:
                if hub.closed_reason is not None or hub.close_code == 4409:
                    return
                connected.clear()
                yield await resume_now(last_segment)
                continue
            if isinstance(event, FinalTranscript):
                last_segment = max(event.segment_id, last_segment or 0)
                ledger.confirm_until(event.end)
            elif isinstance(event, ErrorEvent) and event.segment_id is not None:
                last_segment = max(event.segment_id, last_segment or 0)
            elif isinstance(event, SessionHandover):
                connected.clear()  # the hub reads no more here: the ledger keeps the audio
            yield event
            if isinstance(event, SessionClosed):
                return
            sender_failed()


@contextlib.asynccontextmanager
async def _sending(hub: HubStream, pump: Coroutine[Any, Any, None]) -> AsyncIterator[Callable[[], None]]:
    """Run ``pump`` (the audio sender) beside the caller's reading of ``hub``. Yields a check
    that raises what the sender failed with (the source raised, or sending broke); on the way
    out, however it ends, the sender is stopped and awaited and the connection closed."""
    sender = asyncio.create_task(pump)

    def sender_failed() -> None:
        failure = sender.exception() if sender.done() and not sender.cancelled() else None
        if failure is not None:
            raise failure

    try:
        yield sender_failed
    finally:
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await hub.close()
