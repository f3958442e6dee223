"""Deepgram-compatible ``/v1/listen``: the official ``deepgram-sdk`` pointed at the hub works.

Live, ``GET /v1/listen`` (WebSocket), query parameters as in
:mod:`asrhub.transports.deepgram_options`::

    client: binary audio … {"type":"KeepAlive"} … {"type":"Finalize"} … {"type":"CloseStream"}
    hub:    SpeechStarted · Results(is_final=false) · Results(is_final=true, speech_final=true)
            · UtteranceEnd · … · Results(from_finalize=true) · Metadata · close 1000

* ``UtteranceEnd`` (with ``utterance_end_ms``) runs on its own timer, as the hosted API's: once
  the audio received has gone ``utterance_end_ms`` past the end of the last finalized word
  with no new words (a transcript, interim or final, of later speech resets it), whatever the
  endpointing; ``last_word_end`` is that word's end. Compressed audio (whose stream time the
  transport does not know) gets it right after each final;

* one :class:`~asrhub.transports.relay.Relay` per connection: hub sessions with the same
  pipeline, engines, limits and metrics (transport ``deepgram``) as ``/v1/stream``; the socket
  loop awaits each audio frame's ``feed`` (backpressure reaches the client's TCP stream);
* ``Finalize`` flushes the audio so far (its finals carry ``from_finalize: true``) and the
  stream goes on; ``CloseStream`` (or an empty binary frame) flushes, sends ``Metadata`` and
  closes with 1000; ``KeepAlive`` restarts the idle clock (``limits.idle_timeout_s``);
* handshake errors are HTTP answers in Deepgram's REST error shape (``{"err_code",
  "err_msg", "request_id"}``, header ``dg-error``): 400 bad parameter or unknown model, 401
  no/wrong key, 429 capacity — the SDK raises ``ApiError`` with that status;
* during the stream, an error is an ``Error`` message (``variant`` = the hub's code,
  ``description``); a fatal one then closes the socket: 1008 bad data / policy, 1011 engine
  failure or idle timeout, 1001 hub shutdown;
* auth: ``Authorization: Token KEY`` or ``Bearer KEY``, or the browser form
  ``Sec-WebSocket-Protocol: token, KEY`` (the ``token`` subprotocol is selected);
* a hub session is open from the handshake (its idle clock: ``limits.idle_timeout_s``, which
  ``KeepAlive`` restarts); after a ``Finalize`` the next audio opens the next one, and until it
  comes the stream must send audio or ``KeepAlive`` within ``limits.idle_timeout_s`` — else an
  ``Error`` (``timeout``), ``Metadata`` and close 1011 (``NET-0001``), Deepgram's own answer
  to a silent stream; a text message that is not JSON, or JSON nested too deep, gets an
  ``Error`` and the stream goes on.

Pre-recorded, ``POST /v1/listen``: the raw body (an accepted audio container; raw PCM with
``encoding``/``sample_rate``) → Deepgram's response (``metadata``, ``results.channels[0]
.alternatives[0]`` with ``transcript``, ``confidence``, ``words``, ``paragraphs`` with
``paragraphs=true``; ``results.utterances`` with ``utterances=true``), formatted as
``smart_format`` / ``numerals``, ``profanity_filter`` and ``redact`` ask (live: the session's
``format`` does it, on interim and final results). A JSON body ``{"url": …}`` is fetched only
with ``server.fetch_urls`` on (else 400).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from multidict import MultiDict, MultiMapping

from asrhub.engine.finals import pieces
from asrhub.errors import HubError
from asrhub.format import format_file
from asrhub.frames import (
    ErrorEvent,
    Event,
    FinalTranscript,
    PartialTranscript,
    SessionClosed,
    SpeechStarted,
    Word,
)
from asrhub.hub import Hub
from asrhub.jobs.queue import Job
from asrhub.plugin import Transcription
from asrhub.protocol import encode_json

from . import deepgram_options as dg
from .batch import pcm16_wav, transcribe_channels, transcribe_upload
from .common import (
    CONNECTIONS,
    HUB,
    KEY_ID,
    SETTINGS,
    UNAUTHORIZED,
    add_websocket_route,
    discard_on_close,
    read_limited,
    reset,
)
from .deepgram_paragraphs import paragraphs
from .door import DOOR, register_refusal, status_of
from .g711 import to_pcm16
from .jobs import accept, register_runner
from .json_input import load, load_object
from .relay import Relay
from .stream_socket import StreamSocket

PATH = "/v1/listen"
TRANSPORT = "deepgram"
CLOSE_TIMEOUT = 2.0
MAX_TEXT_BYTES = 64 * 1024
CLOSE_CODES = {
    "timeout": (WSCloseCode.INTERNAL_ERROR, "NET-0001"),
    "bad_audio": (WSCloseCode.POLICY_VIOLATION, "DATA-0000"),
    "provider_failed": (WSCloseCode.INTERNAL_ERROR, "NET-0000"),
    "slow_consumer": (WSCloseCode.POLICY_VIOLATION, "NET-0002"),
    "shutdown": (WSCloseCode.GOING_AWAY, "NET-0003"),
}
HTTP_STATUS = {"capacity": 429}


def error_response(error: HubError, request_id: str, status: int | None = None) -> web.Response:
    """A Deepgram-shaped HTTP error (handshake and pre-recorded)."""
    status = HTTP_STATUS.get(error.code) or status or status_of(error)
    headers = {"dg-request-id": request_id, "dg-error": error.message[:200]}
    if status == 401:
        headers["WWW-Authenticate"] = "Token"
    return web.json_response(dg.error_body(error, request_id), status=status, headers=headers)


def refusal(_request: web.Request, error: HubError, status: int) -> web.StreamResponse:
    """The door's refusals under ``/v1/listen`` (no key, a refused origin or host, …)."""
    return error_response(error, str(uuid.uuid4()), status)


def _terms(query: MultiMapping[str]) -> list[str]:
    return [*query.getall("keyterm", []), *query.getall("keywords", [])]


def _parse(request: web.Request) -> dg.ListenOptions:
    query = request.query
    return dg.parse(request.app[HUB], query, _terms(query), query.getall("redact", []))


class LiveStream:
    """One live connection: hub events → Deepgram messages."""

    def __init__(
        self, ws: web.WebSocketResponse, options: dg.ListenOptions, request_id: str, provider: str
    ) -> None:
        self.ws = ws
        self.options = options
        self.request_id = request_id
        self.provider = provider
        self.model_uuid = dg.model_uuid(provider)
        self.created = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self.sha256 = hashlib.sha256()
        self.relay: Relay
        self.finalizing = False
        self.word_end: dict[int, float] = {}
        """Per channel: the end of the last finalized word (stream seconds) while its
        ``UtteranceEnd`` is due."""
        self.channels = options.channels if options.multichannel else 1
        self.last_t = 0.0
        self.ended = False
        self._lock = asyncio.Lock()

    async def send(self, body: dict[str, Any]) -> None:
        async with self._lock:
            await self.ws.send_str(encode_json(body).decode())

    def results(
        self,
        text: str,
        start: float,
        end: float,
        words: tuple[Word, ...] | None,
        offset: float,
        *,
        final: bool,
        channel: int | None = None,
    ) -> dict[str, Any]:
        relay = self.relay
        return {
            "type": "Results",
            "channel_index": [channel or 0, self.channels],
            "duration": round(end - start, 3),
            "start": round(start, 3),
            "is_final": final,
            "speech_final": final and self.options.vad and not relay.flushing,
            "from_finalize": final and self.finalizing,
            "channel": {
                "alternatives": [
                    {
                        "transcript": text,
                        "confidence": dg.confidence(words) if final else 0.0,
                        "words": dg.words(words, offset),
                    }
                ]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": dg.model_info(self.provider),
                "model_uuid": self.model_uuid,
            },
        }

    async def deliver(self, event: Event, offset: float) -> None:
        if isinstance(event, FinalTranscript):
            start, end = event.start + offset, event.end + offset
            self.last_t = max(self.last_t, end)
            channel = event.channel or 0
            await self.send(
                self.results(event.text.strip(), start, end, event.words, offset, final=True, channel=channel)
            )
            if self.options.utterance_end_ms is not None and event.text.strip():
                self.word_end[channel] = event.words[-1].end + offset if event.words else end
                await self.utterance_end()
        elif isinstance(event, PartialTranscript):
            due = self.word_end.get(event.channel or 0)
            if event.text.strip() and (due is None or event.end + offset > due):
                self.word_end.pop(event.channel or 0, None)  # words go on: no gap yet
            if self.options.interim_results:
                start, end = event.start + offset, event.end + offset
                await self.send(
                    self.results(
                        event.text.strip(), start, end, None, offset, final=False, channel=event.channel
                    )
                )
        elif isinstance(event, SpeechStarted):
            if self.options.vad_events:
                await self.send(
                    {
                        "type": "SpeechStarted",
                        "channel": [event.channel or 0, self.channels],
                        "timestamp": round(event.t + offset, 3),
                    }
                )
        elif isinstance(event, ErrorEvent):
            await self.send({"type": "Error", "variant": event.code, "description": event.message})
            if event.fatal:
                await self.end(event.code)
        elif isinstance(event, SessionClosed) and not self.relay.flushing:
            await self.end(None if event.reason == "end" else event.reason)

    async def utterance_end(self) -> None:
        """``UtteranceEnd`` once the stream has run ``utterance_end_ms`` past the last finalized
        word with no word since (the hosted API's own timer, on stream time: checked when a
        final arrives and after each audio frame)."""
        ms = self.options.utterance_end_ms
        if ms is None or not self.word_end:
            return
        for channel, last in sorted(self.word_end.items()):  # each channel on its own timer
            if not self.relay.bytes_per_second or self.relay.position >= last + ms / 1000:
                del self.word_end[channel]
                await self.send(
                    {
                        "type": "UtteranceEnd",
                        "channel": [channel, self.channels],
                        "last_word_end": round(last, 3),
                    }
                )

    async def end(self, code: str | None) -> None:
        """Metadata, then close (once)."""
        if self.ended:
            return
        self.ended = True
        duration = self.relay.position if self.relay.bytes_per_second else self.last_t
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(
                {
                    "type": "Metadata",
                    "transaction_key": "deprecated",
                    "request_id": self.request_id,
                    "sha256": self.sha256.hexdigest(),
                    "created": self.created,
                    "duration": round(duration, 3),
                    "channels": self.options.channels,
                    "models": [self.model_uuid],
                    "model_info": {self.model_uuid: dg.model_info(self.provider)},
                }
            )
        ws_code, reason = CLOSE_CODES.get(code or "", (WSCloseCode.OK, ""))
        if code and code not in CLOSE_CODES:
            ws_code, reason = WSCloseCode.POLICY_VIOLATION, code
        with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
            await asyncio.wait_for(self.ws.close(code=ws_code, message=reason.encode()), CLOSE_TIMEOUT)

    async def handle_text(self, raw: str) -> bool:
        """One control message; returns False when the stream is over."""
        try:
            message = load(raw, max_bytes=MAX_TEXT_BYTES)
        except HubError:
            message = None
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "KeepAlive":
            self.relay.touch()
        elif kind == "Finalize":
            self.finalizing = True
            try:
                await self.relay.flush()
            finally:
                self.finalizing = False
        elif kind == "CloseStream":
            await self.relay.finish()
            await self.end(None)
            return False
        elif kind == "Configure" and isinstance(message, dict):
            await self.configure(message)
        else:
            await self.send(
                {
                    "type": "Error",
                    "variant": "SchemaError",
                    "description": "a JSON object of type KeepAlive, Finalize, CloseStream, Configure",
                    "message": raw[:1024],
                }
            )
        return True

    async def configure(self, message: dict[str, Any]) -> None:
        """``Configure``: ``keyterms`` replace the stream's key terms from the next utterance."""
        keyterms = message.get("keyterms")
        if keyterms is None:
            await self.send({"type": "ConfigureSuccess", "request_id": self.request_id, "keyterms": None})
            return
        try:
            if not isinstance(keyterms, list) or not all(isinstance(t, str) for t in keyterms):
                raise HubError("bad_message", "keyterms must be a list of strings")
            self.relay.update({"keyterms": keyterms})
        except HubError as exc:
            code = (
                "CONFIGURE_KEYTERM_LIMIT_EXCEEDED" if "length" in exc.message else "CONFIGURE_INTERNAL_ERROR"
            )
            failure = {"type": "ConfigureFailure", "request_id": self.request_id, "code": code}
            await self.send({**failure, "description": exc.message})
            return
        await self.send({"type": "ConfigureSuccess", "request_id": self.request_id, "keyterms": keyterms})

    async def handle_audio(self, data: bytes) -> bool:
        if not data:  # the legacy end-of-stream signal
            return await self.handle_text('{"type": "CloseStream"}')
        self.sha256.update(data)
        if self.options.g711 is not None:
            data = to_pcm16(data, self.options.g711)
        try:
            await self.relay.feed(data)
        except HubError as exc:
            await self.send({"type": "Error", "variant": exc.code, "description": exc.message})
            if exc.fatal:
                await self.end(exc.code)
                return False
        await self.utterance_end()
        return True


async def live(request: web.Request) -> web.StreamResponse:
    hub, settings = request.app[HUB], request.app[SETTINGS]
    request_id = str(uuid.uuid4())
    refused = request.get(UNAUTHORIZED)
    if refused is not None:
        return error_response(refused, request_id)
    try:
        options = _parse(request)
    except HubError as exc:
        return error_response(exc, request_id)
    limit = hub.limits.max_frame_bytes
    ws = StreamSocket(  # a client that answers no ping is cut with a reset
        protocols=("token", "bearer"),
        heartbeat=settings.server.heartbeat_s,
        max_msg_size=2 * limit,
        timeout=CLOSE_TIMEOUT,
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        return error_response(HubError("bad_message", "expected a WebSocket upgrade"), request_id)
    config = options.session_config(partials=options.interim_results)
    try:
        provider = hub.resolve_config(config).providers[0]
    except HubError as exc:
        return error_response(exc, request_id)
    stream = LiveStream(ws, options, request_id, provider)
    tcp = request.transport

    def abandon() -> None:  # a client that reads nothing: its close is a reset, within a deadline
        discard_on_close(tcp)
        asyncio.get_running_loop().call_later(2 * CLOSE_TIMEOUT, reset, tcp)

    relay = Relay(
        hub,
        transport=TRANSPORT,
        key=request.get(KEY_ID),
        config=config,
        deliver=stream.deliver,
        bytes_per_second=options.bytes_per_second,
        abandon=abandon,
        close=lambda: stream.end("shutdown"),
    )
    stream.relay = relay
    try:
        await relay.open()  # capacity is answered before the upgrade
    except HubError as exc:
        relay.release()
        return error_response(exc, request_id)
    await ws.prepare(request)
    connections = request.app[CONNECTIONS]
    connections.add(relay)
    door = request.app[DOOR]
    try:
        while True:
            until = relay.waiting_until(door.start_timeout_s, door.idle_timeout_s)
            try:
                async with asyncio.timeout_at(until):  # not receive(timeout): pongs would restart it
                    msg = await ws.receive()
            except TimeoutError:  # no session open, and nothing from the client in time
                await stream.deliver(
                    ErrorEvent(code="timeout", message="no audio or KeepAlive in time", fatal=True), 0.0
                )
                break
            if msg.type is WSMsgType.BINARY:
                going = await stream.handle_audio(msg.data)
            elif msg.type is WSMsgType.TEXT:
                going = await stream.handle_text(msg.data)
            else:
                break
            if not going:
                break
    except ConnectionError:
        pass
    finally:
        relay.release()
        connections.discard(relay)
    return ws


# --------------------------------------------------------------------------- pre-recorded


async def prerecorded(request: web.Request) -> web.Response:
    """The synchronous answer, or with ``callback=URL`` 202 ``{"request_id"}`` at once and the
    same answer POSTed to the URL later (:mod:`~asrhub.transports.jobs`)."""
    hub, settings = request.app[HUB], request.app[SETTINGS]
    request_id = str(uuid.uuid4())
    try:
        options = _parse(request)
        limit = settings.server.max_upload_bytes
        if request.content_type == "application/json":
            data = await fetch_url(request, limit)
        else:
            data = await read_limited(request, limit, "the audio")
        if not data:
            raise HubError("bad_message", "no audio: send the audio as the request body")
        callback = request.query.get("callback")
        if callback:
            params = {
                k: request.query.getall(k) for k in request.query if k not in ("callback", "callback_method")
            }
            job = await accept(
                request,
                "deepgram",
                params,
                data,
                callback,
                request.query.get("callback_method"),
                job_id=request_id,
            )
            return web.json_response({"request_id": job.id}, status=202, headers={"dg-request-id": job.id})
        body = await _answer(hub, options, data, request_id)
    except HubError as exc:
        return error_response(exc, request_id)
    return web.Response(
        body=encode_json(body), content_type="application/json", headers={"dg-request-id": request_id}
    )


async def _run_job(hub: Hub, job: Job, last: bool) -> tuple[bytes, str | None]:
    """A pre-recorded request with ``callback``: the body the synchronous request would answer
    (an error in Deepgram's error shape)."""
    query = MultiDict((k, v) for k, values in job.params.items() for v in values)
    try:
        options = dg.parse(hub, query, _terms(query), query.getall("redact", []))
        return encode_json(await _answer(hub, options, job.data or b"", job.id)), None
    except HubError as exc:
        if exc.code == "capacity" and not last:
            raise  # tried again later
        return encode_json(dg.error_body(exc, job.id)), exc.message


async def _answer(hub: Hub, options: dg.ListenOptions, data: bytes, request_id: str) -> dict[str, Any]:
    sha256 = hashlib.sha256(data).hexdigest()
    if options.encoding == "pcm_s16le":  # raw PCM: give it the WAV header that names its format
        data = pcm16_wav(
            to_pcm16(data, options.g711) if options.g711 else data, options.sample_rate, options.channels
        )
    kwargs: dict[str, Any] = {
        "provider": options.provider,
        "language": options.language,
        "prompt": None,
        **({"model": options.model} if options.model else {}),
        **({"keyterms": options.keyterms} if options.keyterms else {}),
        **({"diarize": True} if options.diarize else {}),
    }
    if options.multichannel:  # each channel on its own: results.channels[i]
        name, transcriptions, duration = await transcribe_channels(hub, data, **kwargs)
    else:
        name, result, duration = await transcribe_upload(hub, data, **kwargs)
        transcriptions = [result]
    uid = dg.model_uuid(name)
    results: dict[str, Any] = {"channels": []}
    utterances: list[dict[str, Any]] = []
    for channel, raw in enumerate(transcriptions):
        result = await format_file(raw, options.format, options.language)
        alternative: dict[str, Any] = {
            "transcript": result.text.strip(),
            "confidence": dg.confidence(result.words),
            "words": dg.words(result.words),
        }
        if options.paragraphs:
            alternative["paragraphs"] = paragraphs(result.words, result.text, duration)
        results["channels"].append({"alternatives": [alternative]})
        if result.language and not options.language:
            results["channels"][-1]["detected_language"] = result.language
        if options.utterances:
            utterances += _utterances(result, duration, options.utt_split, request_id, channel)
    if options.utterances:
        results["utterances"] = sorted(utterances, key=lambda u: (u["start"], u["channel"]))
    return {
        "metadata": {
            "transaction_key": "deprecated",
            "request_id": request_id,
            "sha256": sha256,
            "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "duration": round(duration, 3),
            "channels": len(transcriptions),
            "models": [uid],
            "model_info": {uid: dg.model_info(name)},
        },
        "results": results,
    }


async def fetch_url(request: web.Request, limit: int) -> bytes:
    """The audio a ``{"url": …}`` body names, when ``server.fetch_urls`` allows fetching."""
    if not request.app[SETTINGS].server.fetch_urls:
        raise HubError(
            "bad_message",
            "this hub does not fetch audio by URL (server.fetch_urls is off): send the audio as the body",
        )
    body = load_object(await read_limited(request, 64 * 1024, "the JSON body"), what="the JSON body")
    url = body.get("url")
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise HubError("bad_message", 'expected {"url": "http(s)://…"}')
    timeout = aiohttp.ClientTimeout(total=60)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
            if resp.status != 200:
                raise HubError("bad_message", f"fetching {url} answered HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > limit:
                raise HubError("too_large", f"{url} has {resp.content_length} bytes; the limit is {limit}")
            chunks, size = [], 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise HubError("too_large", f"{url} exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HubError("bad_message", f"could not fetch {url}: {exc or type(exc).__name__}") from None
    return b"".join(chunks)


def _utterances(
    result: Transcription, duration: float, split_s: float, request_id: str, channel: int = 0
) -> list[dict[str, Any]]:
    """Deepgram's utterances: the words split where they pause ``utt_split`` seconds or more, or
    where the speaker changes (the engine's own pieces when it gives no words)."""
    groups: list[list[Word]] = []
    for word in result.words or ():
        if not groups or word.start - groups[-1][-1].end >= split_s or word.speaker != groups[-1][-1].speaker:
            groups.append([])
        groups[-1].append(word)
    spans: list[tuple[float, float, str, tuple[Word, ...], int | None]]
    if groups:
        spans = [(g[0].start, g[-1].end, " ".join(w.word for w in g), tuple(g), g[0].speaker) for g in groups]
    else:
        spans = [(p.start, p.end, p.text.strip(), (), p.speaker) for p in pieces(result, duration)]
    return [
        {
            "start": round(start, 3),
            "end": round(end, 3),
            "confidence": dg.confidence(words),
            "channel": channel,
            "transcript": text,
            "words": dg.words(words),
            "speaker": speaker or 0,
            "id": str(
                uuid.uuid5(
                    uuid.NAMESPACE_URL, f"{request_id}:{channel}:{i}" if channel else f"{request_id}:{i}"
                )
            ),
        }
        for i, (start, end, text, words, speaker) in enumerate(spans)
    ]


def setup(app: web.Application) -> None:
    add_websocket_route(app, PATH, live)
    app.router.add_post(PATH, prerecorded)
    register_runner(app, "deepgram", _run_job)
    register_refusal(app, PATH, refusal)
