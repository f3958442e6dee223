"""``funasr`` — a client of FunASR's runtime WebSocket server (``funasr-wss-server`` for offline,
``funasr-wss-server-2pass`` for online/2pass), the way FunASR is deployed in production.

The protocol (FunASR runtime/docs/websocket_protocol.md and its reference client
runtime/python/websocket/funasr_wss_client.py), as followed here, one WebSocket connection per
utterance (subprotocol ``binary``):

1. a JSON config: ``mode``, ``chunk_size``, ``chunk_interval``, ``wav_name``, ``wav_format:
   "pcm"``, ``audio_fs: 16000``, ``is_speaking: true``, ``hotwords`` (a JSON *string*
   ``{"word": weight}``, or plain words), ``itn``, and for SenseVoice ``svs_lang`` / ``svs_itn``;
2. binary PCM16 frames of ``60 * chunk_size[1] / chunk_interval`` ms (what the reference client
   sends; the Python server counts frames, not bytes);
3. ``{"is_speaking": false}`` when the hub's VAD ends the utterance.

Results: ``online`` / ``2pass-online`` (incremental pieces) → ``transcript.partial``;
``2pass-offline`` / ``offline`` (a corrected sentence, with ``timestamp`` — a string of
``[start_ms, end_ms]`` pairs, one per token — and ``stamp_sents``) → the final's text and words.
End of an utterance: in ``offline`` mode the first ``offline`` message (the offline server sets
``is_final: false`` on it — a quirk); in ``online``/``2pass`` the first message with
``is_final: true`` received after ``is_speaking: false`` (the Python demo server flags results
sent *while* speaking as final, so earlier flags are ignored), within ``timeout`` seconds.
FunASR gives no confidence, so words carry probability 1.0.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

import aiohttp
import msgspec
import numpy as np
from msgspec import Meta

from asrhub.config import SessionConfig
from asrhub.engine.provider_settings import check_from, read_settings
from asrhub.engine.registry import ProviderSpec
from asrhub.engine.stream_stage import stream_stage
from asrhub.frames import Samples, Word
from asrhub.pcm import float_to_pcm16
from asrhub.plugin import (
    Capabilities,
    Operator,
    Priority,
    Provider,
    ProviderError,
    ProviderUnavailable,
    SessionContext,
    TimedText,
    Transcription,
    hint_prompt,
)

RATE = 16_000


class FunasrSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str = "ws://127.0.0.1:10095"
    """``ws://`` or ``wss://`` address of the FunASR runtime server."""
    ssl_verify: bool = True
    """False accepts the self-signed certificate FunASR's servers ship with (``wss`` only)."""
    mode: Literal["offline", "online", "2pass"] = "2pass"
    chunk_size: tuple[int, int, int] = (5, 10, 5)
    """Streaming latency: look-back, chunk, look-ahead in 60 ms units ([5,10,5] = 600 ms chunks)."""
    chunk_interval: Annotated[int, Meta(ge=1, le=100)] = 10
    hotwords: dict[str, int] | str | None = None
    """``{"word": weight}`` (sent as FunASR's JSON string) or plain space-separated words."""
    itn: bool = True
    svs_lang: str | None = None
    """SenseVoice language (``auto``, ``zh``, ``en``, ``yue``, ``ja``, ``ko``); a session's
    ``language`` overrides it."""
    svs_itn: bool | None = None
    timeout: Annotated[float, Meta(gt=0)] = 30.0
    """Seconds to wait for the final result after the end of an utterance's audio."""
    connect_timeout: Annotated[float, Meta(gt=0)] = 5.0
    wav_name: str = "asrhub"


def parse_settings(options: dict[str, Any]) -> FunasrSettings:
    settings = read_settings("funasr", options, FunasrSettings, strict=False)
    scheme = urlparse(settings.url).scheme
    if scheme not in ("ws", "wss"):
        raise ProviderUnavailable(f"funasr url must start with ws:// or wss://, not {settings.url!r}")
    if settings.chunk_size[1] <= 0:
        raise ProviderUnavailable("funasr chunk_size[1] must be positive (FunASR rejects it otherwise)")
    return settings


class FunasrProvider:
    name = "funasr"

    def __init__(self, settings: FunasrSettings) -> None:
        self.settings = settings
        streaming = settings.mode != "offline"
        self.capabilities = Capabilities(
            streaming=streaming, partials=streaming, word_timestamps=True, keyterms=True
        )
        self._http: aiohttp.ClientSession | None = None
        stride_ms = 60 * settings.chunk_size[1] / settings.chunk_interval
        self._stride = max(160, int(RATE * stride_ms / 1000))

    async def start(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "name": self.name,
            "model": f"FunASR {s.mode} server at {s.url}",
            "url": s.url,
            "mode": s.mode,
            "streaming": self.capabilities.streaming,
            "partials": self.capabilities.partials,
            "word_timestamps": True,
            "languages": None,
        }

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        """Whole audio in ``offline`` mode (both FunASR servers accept it), one connection."""

        async def audio() -> AsyncIterator[Samples]:
            yield samples

        prompt = hint_prompt(prompt, options.get("keyterms"))
        result = await self.converse(audio(), None, mode="offline", language=language, prompt=prompt)
        return Transcription(
            text=result.text,
            language=result.language,
            words=result.words,
            segments=result.segments,
            duration=len(samples) / RATE,
        )

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        if self.settings.mode == "offline":
            from asrhub.engine.batch_stage import batch_stage

            return batch_stage(self, ctx, fallbacks)

        async def recognize(
            audio: AsyncIterator[Samples], on_partial: Callable[[str], None] | None, config: SessionConfig
        ) -> Transcription:
            return await self.converse(
                audio,
                on_partial,
                mode=self.settings.mode,
                language=config.fixed_language,
                prompt=hint_prompt(config.prompt, config.keyterms),
            )

        return stream_stage(
            self,
            recognize,
            ctx,
            fallbacks,
            final_timeout_s=self.settings.timeout + 1.0,
        )

    # ------------------------------------------------------------------ the protocol

    def config_message(self, mode: str, language: str | None, prompt: str | None) -> dict[str, Any]:
        s = self.settings
        message: dict[str, Any] = {
            "mode": mode,
            "chunk_size": list(s.chunk_size),
            "chunk_interval": s.chunk_interval,
            "wav_name": s.wav_name,
            "wav_format": "pcm",
            "audio_fs": RATE,
            "is_speaking": True,
            "itn": s.itn,
        }
        hotwords = s.hotwords
        if isinstance(hotwords, dict):
            message["hotwords"] = json.dumps(hotwords, ensure_ascii=False)
        elif hotwords:
            message["hotwords"] = hotwords
        elif prompt:
            message["hotwords"] = prompt  # the session's vocabulary hint, as plain hot words
        svs_lang = language or s.svs_lang
        if svs_lang:
            message["svs_lang"] = svs_lang
        if s.svs_itn is not None:
            message["svs_itn"] = s.svs_itn
        return message

    async def converse(
        self,
        audio: AsyncIterator[Samples],
        on_partial: Callable[[str], None] | None,
        *,
        mode: str,
        language: str | None,
        prompt: str | None,
    ) -> Transcription:
        """One utterance over one connection; raises :class:`ProviderError` on any failure."""
        ws = await self._connect()
        end_sent = asyncio.Event()
        try:
            await ws.send_str(json.dumps(self.config_message(mode, language, prompt), ensure_ascii=False))
            receiver = asyncio.ensure_future(self._receive(ws, on_partial, mode, end_sent))
            sender = asyncio.ensure_future(self._send_audio(ws, audio, end_sent))
            try:
                await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
                if receiver.done():
                    return receiver.result()  # raises: the server went away mid-utterance
                sender.result()
                try:
                    return await asyncio.wait_for(receiver, self.settings.timeout)
                except TimeoutError:
                    raise ProviderError(
                        f"funasr: no final result within {self.settings.timeout:g} s after the end of audio"
                    ) from None
            finally:
                receiver.cancel()
                sender.cancel()
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise ProviderError(f"funasr: connection to {self.settings.url} failed: {exc}") from exc
        finally:
            await ws.close()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._http is None:
            await self.start()
        assert self._http is not None
        s = self.settings
        ssl_option: ssl.SSLContext | bool = True
        if s.url.startswith("wss") and not s.ssl_verify:
            ssl_option = False
        try:
            return await asyncio.wait_for(
                self._http.ws_connect(
                    s.url,
                    protocols=("binary",),
                    ssl=ssl_option,
                    heartbeat=None,
                    autoping=True,
                    max_msg_size=16 << 20,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                ),
                s.connect_timeout,
            )
        except TimeoutError:
            raise ProviderError(f"funasr: no connection to {s.url} within {s.connect_timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError(f"funasr: cannot connect to {s.url}: {exc}") from exc

    async def _send_audio(
        self, ws: aiohttp.ClientWebSocketResponse, audio: AsyncIterator[Samples], end_sent: asyncio.Event
    ) -> None:
        pending = np.zeros(0, np.int16)
        async for samples in audio:
            pcm = np.frombuffer(float_to_pcm16(samples), "<i2")
            pending = np.concatenate((pending, pcm)) if len(pending) else pcm
            while len(pending) >= self._stride:
                await ws.send_bytes(pending[: self._stride].tobytes())
                pending = pending[self._stride :]
        if len(pending):
            await ws.send_bytes(pending.tobytes())
        await ws.send_str(json.dumps({"is_speaking": False}))
        end_sent.set()

    async def _receive(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        on_partial: Callable[[str], None] | None,
        mode: str,
        end_sent: asyncio.Event,
    ) -> Transcription:
        sentences: list[str] = []
        online = ""
        words: list[Word] = []
        segments: list[TimedText] = []
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                code = ws.close_code
                reason = f" (code {code}{': ' + str(msg.extra) if msg.extra else ''})" if code else ""
                raise ProviderError(
                    f"funasr: the server closed the connection before the final result{reason}"
                )
            if msg.type == aiohttp.WSMsgType.ERROR:
                raise ProviderError(f"funasr: connection error: {ws.exception()}")
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                result = json.loads(msg.data)
            except json.JSONDecodeError:
                raise ProviderError(f"funasr: the server sent invalid JSON: {msg.data[:200]!r}") from None
            kind = result.get("mode", "")
            text = str(result.get("text") or "")
            if kind in ("online", "2pass-online"):
                online = _join(online, text)
            elif kind in ("offline", "2pass-offline"):
                sentences.append(text.strip())
                online = ""
                words.extend(_words(result, text))
                segments.extend(_segments(result))
            if on_partial is not None and (text or kind.endswith("offline")):
                on_partial(_join(_join_all(sentences), online))
            if kind == "offline" and mode == "offline":
                break  # offline: the first offline result ends the utterance, whatever is_final says
            if result.get("is_final") and end_sent.is_set():
                break
        text = _join(_join_all(sentences), online)
        return Transcription(text=text.strip(), words=tuple(words) or None, segments=tuple(segments))


# ---------------------------------------------------------------------- result parsing

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
"""Scripts written without spaces (kana, CJK ideographs): one timestamp per character."""
_TOKEN = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_IS_CJK = re.compile(f"[{_CJK}]")
_PUNCT = "，。？！、,.?!;:：；\"'“”"


def _tokens(text: str) -> list[str]:
    """FunASR's timestamp tokens: CJK characters one by one, other words whole, no punctuation."""
    return [t for t in (m.strip(_PUNCT) for m in _TOKEN.findall(text)) if t]


def _pairs(value: Any) -> list[tuple[int, int]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    if not isinstance(value, list):
        return []
    return [(int(p[0]), int(p[1])) for p in value if isinstance(p, list | tuple) and len(p) == 2]


def _words(result: dict[str, Any], text: str) -> list[Word]:
    """Token times: from ``stamp_sents`` (tokens given) or ``timestamp`` paired with the text's
    tokens; nothing when the counts disagree (better no words than wrong ones)."""
    out: list[Word] = []
    sents = result.get("stamp_sents")
    if isinstance(sents, list) and sents:
        for sent in sents:
            if not isinstance(sent, dict):
                return []
            tokens = str(sent.get("text_seg", "")).split()
            stamps = _pairs(sent.get("ts_list"))
            if len(tokens) != len(stamps):
                return []
            out.extend(Word(t, s / 1000, e / 1000, 1.0) for t, (s, e) in zip(tokens, stamps, strict=True))
        return out
    tokens, stamps = _tokens(text), _pairs(result.get("timestamp"))
    if not stamps or len(tokens) != len(stamps):
        return []
    return [Word(t, s / 1000, e / 1000, 1.0) for t, (s, e) in zip(tokens, stamps, strict=True)]


def _segments(result: dict[str, Any]) -> list[TimedText]:
    sents = result.get("stamp_sents")
    if not isinstance(sents, list):
        return []
    out = []
    for sent in sents:
        if not isinstance(sent, dict):
            continue
        start, end = sent.get("start"), sent.get("end")
        if isinstance(start, int) and isinstance(end, int) and 0 <= start <= end:
            text = " ".join(str(sent.get("text_seg", "")).split()) + str(sent.get("punc", ""))
            out.append(TimedText(text, start / 1000, end / 1000))
    return out


def _join(left: str, right: str) -> str:
    """Concatenate two pieces: a space between two words of a spaced script, none for CJK."""
    if not left:
        return right
    if not right:
        return left
    a, b = left[-1], right[0]
    if a.isspace() or b.isspace() or b in _PUNCT or _IS_CJK.match(a) or _IS_CJK.match(b):
        return left + right
    return left + " " + right


def _join_all(pieces: list[str]) -> str:
    text = ""
    for piece in pieces:
        text = _join(text, piece)
    return text


# ---------------------------------------------------------------------- registration


def _factory(options: dict[str, Any]) -> Provider:
    return FunasrProvider(parse_settings(options))


async def reach(options: dict[str, Any], timeout_s: float) -> str | None:
    """Whether the server answers now: the provider's own WebSocket connection, opened and
    closed, within ``timeout_s`` (``asrhub providers``)."""
    settings = msgspec.structs.replace(parse_settings(options), connect_timeout=timeout_s)
    provider = FunasrProvider(settings)
    try:
        ws = await provider._connect()
        await ws.close()
    except ProviderError as exc:
        return str(exc).removeprefix("funasr: ")
    finally:
        await provider.close()
    return None


spec = ProviderSpec(
    name="funasr",
    description="FunASR runtime server over WebSocket (offline, online, 2pass)",
    factory=_factory,
    check=check_from(parse_settings),
    reach=reach,
)
