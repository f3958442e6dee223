"""OpenAI Realtime transcription sessions: ``/v1/realtime?intent=transcription`` (WebSocket).

The official ``openai`` SDK's ``client.realtime.connect(extra_query={"intent":
"transcription"})`` (and the beta ``client.beta.realtime.connect``) pointed at
``ws://HOST:PORT/v1`` works unchanged::

    client: session.update ─ input_audio_buffer.append ×N ─ (input_audio_buffer.commit) …
    hub:    session.created ─ session.updated ─ input_audio_buffer.speech_started
            ─ conversation.item.input_audio_transcription.delta ×N
            ─ input_audio_buffer.speech_stopped ─ input_audio_buffer.committed
            ─ conversation.item.input_audio_transcription.completed

* the connection runs on hub sessions through a :class:`~asrhub.transports.relay.Relay`
  (transport ``openai_realtime``): same pipeline, engines, limits and metrics as
  ``/v1/stream``; each append awaits ``feed`` (backpressure); the configuration
  (:mod:`~asrhub.transports.realtime_config`): language, prompt, keywords and model change
  the open session from its next utterance; a new format or turn detection first flushes what
  was appended and applies to the next hub session;
* ``server_vad`` (the default): each VAD utterance is one conversation item —
  ``speech_started`` opens it, ``speech_stopped`` + ``committed`` close it, partials become
  ``delta`` events (only text that extends what was sent: deltas never take text back) — of
  their ``stable`` words only, where the engine's partials have them (batch engines), so a
  delta is never a guess a later partial rewrites — and the final becomes the last delta and
  ``completed``. An utterance too short to transcribe is
  completed with an empty transcript;
* ``turn_detection: null``: the client commits; ``commit`` flushes the audio appended since
  the last one into one item (less than 100 ms: ``input_audio_buffer_commit_empty``);
  ``clear`` drops it (``input_audio_buffer.cleared``);
* errors are ``{"type": "error", "error": {"type", "code", "message", "param", "event_id"}}``;
  a fatal one (idle timeout, engine failure, no key) then closes the socket (1008 / 1011);
  a message that is not JSON (or JSON nested too deep) is ``invalid_json`` and the stream goes
  on;
* deadlines: the first append (which opens the hub session) must come within
  ``limits.start_timeout_s`` of connecting; between hub sessions (after a commit, a flush) the
  next within ``limits.idle_timeout_s``; an open session has its own idle clock. Else an error
  ``timeout`` and close 1011.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from asrhub.errors import HubError
from asrhub.frames import (
    ErrorEvent,
    Event,
    FinalTranscript,
    PartialTranscript,
    SessionClosed,
    SpeechEnded,
    SpeechStarted,
)
from asrhub.protocol import encode_json

from . import realtime_config as rc
from .common import (
    CONNECTIONS,
    HUB,
    KEY_ID,
    SETTINGS,
    UNAUTHORIZED,
    add_websocket_route,
    discard_on_close,
    reset,
)
from .door import DOOR
from .g711 import to_pcm16
from .json_input import load
from .relay import Relay
from .stream_socket import StreamSocket

PATH = "/v1/realtime"
TRANSPORT = "openai_realtime"
CLOSE_TIMEOUT = 2.0
MAX_ITEMS = 64
"""Conversation items remembered for matching transcripts to utterances (completed ones go first)."""
MIN_COMMIT_S = 0.1
LIVE_FIELDS = ("language", "prompt", "keyterms", "model")
"""Session fields an open hub session can change (``session.update``) without a flush."""
UNSUPPORTED = ("response.", "conversation.", "output_audio_buffer.")


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(12)}"


@dataclass(eq=False)
class Item:
    id: str
    start: float
    end: float | None = None
    pieces: list[str] = field(default_factory=list)
    partial: str = ""
    emitted: str = ""
    completed: bool = False

    @property
    def text(self) -> str:
        return " ".join(p for p in [*self.pieces, self.partial] if p)


class RealtimeStream:
    def __init__(self, ws: web.WebSocketResponse, *, beta: bool) -> None:
        self.ws = ws
        self.beta = beta
        self.session_id = _id("sess")
        self.config = rc.RealtimeConfig()
        self.relay: Relay
        self.items: list[Item] = []
        self.previous_item_id: str | None = None
        self.pending: list[str] = []  # manual mode: finals of the audio not yet committed
        self.closed = False
        self._lock = asyncio.Lock()

    @property
    def vad(self) -> bool:
        return self.config.turn_detection is not None

    # ------------------------------------------------------------------ output

    async def send(self, body: dict[str, Any]) -> None:
        body = {"event_id": _id("event"), **body}
        async with self._lock:
            await self.ws.send_str(encode_json(body).decode())

    async def error(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        error = {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}
        await self.send({"type": "error", "error": error})

    async def close(self, code: str | None) -> None:
        if self.closed:
            return
        self.closed = True
        ws_code = {None: WSCloseCode.OK, "shutdown": WSCloseCode.GOING_AWAY}.get(
            code, WSCloseCode.POLICY_VIOLATION
        )
        if code in ("provider_failed", "timeout"):
            ws_code = WSCloseCode.INTERNAL_ERROR
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(self.ws.close(code=ws_code, message=(code or "").encode()), CLOSE_TIMEOUT)

    def session_body(self) -> dict[str, Any]:
        return self.config.to_beta(self.session_id) if self.beta else self.config.to_ga(self.session_id)

    # ------------------------------------------------------------------ client → hub

    async def handle_text(self, raw: str) -> None:
        try:
            message = load(raw, max_bytes=len(raw))  # its size is the WebSocket's to bound
        except HubError as exc:
            await self.error("invalid_json", f"The message is not valid JSON: {exc.message}")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error(
                "invalid_value", "Each event must be a JSON object with a string 'type'.", param="type"
            )
            return
        kind, event_id = message["type"], message.get("event_id")
        try:
            if kind in ("session.update", "transcription_session.update"):
                await self.update(message.get("session"), reply=kind.replace(".update", ".updated"))
            elif kind == "input_audio_buffer.append":
                await self.append(message.get("audio"))
            elif kind == "input_audio_buffer.commit":
                await self.commit()
            elif kind == "input_audio_buffer.clear":
                await self.relay.clear()
                self.pending = []
                self.items = [i for i in self.items if i.completed]
                await self.send({"type": "input_audio_buffer.cleared"})
            elif kind.startswith(UNSUPPORTED):
                raise rc.ConfigError("type", f"'{kind}' is not available in a transcription session.")
            else:
                raise rc.ConfigError(
                    "type", f"Invalid value: '{kind}'. This is not a client event of a transcription session."
                )
        except rc.ConfigError as exc:
            await self.error(exc.code, exc.message, param=exc.param, event_id=event_id)
        except HubError as exc:
            await self.error(exc.code, exc.message, event_id=event_id)
            if exc.fatal:
                await self.close(exc.code)

    async def update(self, session: Any, *, reply: str) -> None:
        config = rc.update(self.relay.hub, self.config, session)
        old, new = self.config, config
        live = (old.format, old.rate, old.turn_detection, old.provider) == (
            new.format,
            new.rate,
            new.turn_detection,
            new.provider,
        )
        if self.relay.session is not None and live:
            # language, prompt, key terms, model: the open session takes them from its next utterance
            fields = {k: v for k, v in new.session_config().items() if k in LIVE_FIELDS}
            self.relay.update(fields)
        else:
            if self.relay.session is not None:  # format / turn detection: from the next hub session
                await self.relay.flush()
            self.relay.reconfigure(config.session_config())
        self.config = config
        self.relay.bytes_per_second = config.bytes_per_second
        await self.send({"type": reply, "session": self.session_body()})

    async def append(self, audio: Any) -> None:
        if not isinstance(audio, str):
            raise rc.ConfigError("audio", "Missing required parameter: 'audio' (base64-encoded audio bytes).")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise rc.ConfigError("audio", "Invalid 'audio': not valid base64.") from None
        if self.config.g711 is not None:
            data = to_pcm16(data, self.config.g711)
        if data:
            await self.relay.feed(data)

    async def commit(self) -> None:
        buffered = self.relay.buffered_bytes / self.config.bytes_per_second
        if buffered < MIN_COMMIT_S:
            raise HubError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                f"audio, but buffer only has {buffered * 1000:.2f}ms of audio.",
            )
        if self.vad:
            await self.relay.flush()  # the VAD closes the utterance: speech_stopped, committed, completed
            return
        item = Item(_id("item"), start=self.relay.position - buffered, end=self.relay.position)
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item.id,
                "previous_item_id": self.previous_item_id,
            }
        )
        self.previous_item_id = item.id
        await self.relay.flush()
        item.pieces, self.pending = self.pending, []
        await self.deltas(item)
        await self.complete(item)

    # ------------------------------------------------------------------ hub → client

    async def deliver(self, event: Event, offset: float) -> None:
        if isinstance(event, SpeechStarted):
            item = Item(_id("item"), start=event.t + offset)
            self.items.append(item)
            self._trim()
            await self.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": round(item.start * 1000),
                    "item_id": item.id,
                }
            )
        elif isinstance(event, SpeechEnded):
            speaking = next((i for i in reversed(self.items) if i.end is None), None)
            if speaking is None:
                return
            item = speaking
            item.end = event.t + offset
            await self.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": round(item.end * 1000),
                    "item_id": item.id,
                }
            )
            await self.send(
                {
                    "type": "input_audio_buffer.committed",
                    "item_id": item.id,
                    "previous_item_id": self.previous_item_id,
                }
            )
            self.previous_item_id = item.id
        elif isinstance(event, PartialTranscript) and self.vad:
            found = self._item_at((event.start + event.end) / 2 + offset)
            if found is not None:  # only words that will not change, where the engine says which
                found.partial = (event.text if event.stable is None else event.stable).strip()
                await self.deltas(found)
        elif isinstance(event, FinalTranscript):
            text = event.text.strip()
            if not self.vad:
                if text:
                    self.pending.append(text)
                return
            item = self._item_at((event.start + event.end) / 2 + offset) or await self._new_item(
                event.start + offset
            )
            for earlier in self.items:  # finals come in order: an earlier utterance with none got dropped
                if earlier is item:
                    break
                if earlier.end is not None and not earlier.completed and not earlier.pieces:
                    await self.complete(earlier)
            item.partial = ""
            if text:
                item.pieces.append(text)
            await self.deltas(item)
            if item.end is not None and event.end + offset >= item.end - 0.05:
                await self.complete(item)
        elif isinstance(event, ErrorEvent):
            kind = (
                "server_error" if event.code in ("provider_failed", "capacity") else "invalid_request_error"
            )
            await self.error(event.code, event.message, kind=kind)
            if event.fatal:
                await self.close(event.code)
        elif isinstance(event, SessionClosed):
            if self.relay.flushing:  # every utterance of the flushed session is done
                for item in self.items:
                    if item.end is not None and not item.completed:
                        await self.complete(item)
            else:
                await self.close(None if event.reason == "end" else event.reason)

    async def deltas(self, item: Item) -> None:
        text = item.text
        if len(text) > len(item.emitted) and text.startswith(item.emitted):
            delta, item.emitted = text[len(item.emitted) :], text
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item.id,
                    "content_index": 0,
                    "delta": delta,
                }
            )

    async def complete(self, item: Item) -> None:
        if item.completed:
            return
        item.completed = True
        seconds = round(max(0.0, (item.end or item.start) - item.start), 3)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item.id,
                "content_index": 0,
                "transcript": " ".join(item.pieces),
                "usage": {"type": "duration", "seconds": seconds},
            }
        )
        self._trim()

    def _item_at(self, t: float) -> Item | None:
        open_items = [i for i in self.items if not i.completed]
        if not open_items:
            return None
        before = [i for i in open_items if i.start <= t]
        return before[-1] if before else open_items[0]

    async def _new_item(self, start: float) -> Item:
        item = Item(_id("item"), start=start, end=start)
        self.items.append(item)
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item.id,
                "previous_item_id": self.previous_item_id,
            }
        )
        self.previous_item_id = item.id
        return item

    def _trim(self) -> None:
        while len(self.items) > MAX_ITEMS:
            done = next((i for i in self.items if i.completed), self.items[0])
            self.items.remove(done)


async def handle(request: web.Request) -> web.StreamResponse:
    hub, settings = request.app[HUB], request.app[SETTINGS]
    limit = hub.limits.max_frame_bytes
    ws = StreamSocket(  # a client that answers no ping is cut with a reset
        protocols=("realtime",),
        heartbeat=settings.server.heartbeat_s,
        max_msg_size=3 * limit,  # base64 of up to 2x the frame limit, plus the JSON around it
        timeout=CLOSE_TIMEOUT,
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(reason="expected a WebSocket upgrade")
    await ws.prepare(request)
    beta = "realtime=v1" in request.headers.get("OpenAI-Beta", "")
    stream = RealtimeStream(ws, beta=beta)
    refused = request.get(UNAUTHORIZED)
    intent = request.query.get("intent")
    if refused is not None:
        await stream.error("invalid_api_key", refused.message)
        await stream.close("unauthorized")
        return ws
    if intent != "transcription":
        await stream.error(
            "invalid_value",
            "This hub offers transcription sessions only: connect to /v1/realtime?intent=transcription",
            param="intent",
        )
        await stream.close("bad_message")
        return ws
    tcp = request.transport

    def abandon() -> None:
        discard_on_close(tcp)
        asyncio.get_running_loop().call_later(2 * CLOSE_TIMEOUT, reset, tcp)

    stream.relay = Relay(
        hub,
        transport=TRANSPORT,
        key=request.get(KEY_ID),
        config=stream.config.session_config(),
        deliver=stream.deliver,
        bytes_per_second=stream.config.bytes_per_second,
        abandon=abandon,
        close=lambda: stream.close("shutdown"),
    )
    connections = request.app[CONNECTIONS]
    connections.add(stream.relay)
    door = request.app[DOOR]
    try:
        await stream.send({"type": "session.created", "session": stream.session_body()})
        while not stream.closed:
            until = stream.relay.waiting_until(door.start_timeout_s, door.idle_timeout_s)
            try:
                async with asyncio.timeout_at(until):  # not receive(timeout): pongs would restart it
                    msg = await ws.receive()
            except TimeoutError:  # no hub session open, and no audio in time
                await stream.error("timeout", "No audio was appended in time.", kind="server_error")
                await stream.close("timeout")
                break
            if msg.type is WSMsgType.TEXT:
                await stream.handle_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await stream.error(
                    "invalid_value",
                    "Send audio as input_audio_buffer.append events (base64), not binary frames.",
                )
            else:
                break
    except ConnectionError:
        pass
    finally:
        stream.relay.release()
        connections.discard(stream.relay)
    return ws


def setup(app: web.Application) -> None:
    add_websocket_route(app, PATH, handle)
