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
import io
import json
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from .errors import HubError
from .frames import EVENT_TYPES, ErrorEvent, Event, SessionClosed, SessionStarted, event_from_dict

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
    ) -> HubStream:
        """Open the WebSocket, start a session and wait for ``session.started``.

        Raises :class:`~asrhub.errors.HubError` when the hub refuses (``unauthorized``,
        ``capacity``, ``unknown_provider``, …).
        """
        own = http is None
        http = http or aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            ws = await http.ws_connect(url, headers=headers, heartbeat=heartbeat, max_msg_size=16 << 20)
        except aiohttp.WSServerHandshakeError as exc:
            if own:
                await http.close()
            code = "unauthorized" if exc.status in (401, 403) else "bad_message"
            message = f"the hub refused the connection: HTTP {exc.status} {exc.message}"
            raise HubError(code, message, fatal=True) from None
        except BaseException:
            if own:
                await http.close()
            raise
        stream = cls(http, ws, own)
        await ws.send_str(json.dumps({"type": "session.start", "config": dict(config or {})}))
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
) -> AsyncIterator[Event]:
    """Stream ``source`` in one session and yield every event, ``session.started`` to
    ``session.closed``.

    ``source``: a file path, PCM bytes in the format ``config["audio"]`` declares (default
    16 kHz mono ``pcm_s16le``), or an async iterator of such bytes (a live source sets its own
    pace). ``session.end`` is sent when the source is exhausted.
    """
    config = dict(config or {})
    if isinstance(source, str | Path):
        pcm, audio = read_audio_file(source)
        config.setdefault("audio", audio)
        source = pcm
    audio = config.get("audio") or {}
    if isinstance(source, bytes):
        rate = bytes_per_second(audio)
        size = max(2, int(rate * chunk_ms / 1000) // 2 * 2)
        frames: AsyncIterable[bytes] = chunks(source, size, pace=rate if realtime else None)
    else:
        frames = source
    hub = await HubStream.connect(url, config=config, api_key=api_key, http=http)

    async def pump() -> None:
        async for frame in frames:
            await hub.send(frame)
        await hub.end()

    sender = asyncio.create_task(pump())
    try:
        assert hub.started is not None
        yield hub.started
        async for event in hub:
            yield event
            failure = sender.exception() if sender.done() and not sender.cancelled() else None
            if failure is not None:
                raise failure
    finally:
        if not sender.done():
            sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await hub.close()
