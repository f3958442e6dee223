"""OpenAI-compatible endpoints: the official ``openai`` SDK pointed at ``http://HOST:PORT/v1``
works unchanged.

``POST /v1/audio/transcriptions`` (multipart): ``file``, ``model``, ``language``, ``prompt``,
``response_format`` (``json`` · ``text`` · ``srt`` · ``vtt`` · ``verbose_json`` ·
``diarized_json``: segments per speaker turn, speakers ``A``, ``B``, …), ``chunking_strategy``
(``auto`` or ``server_vad``: accepted),
``temperature`` (accepted, echoed in verbose segments), ``timestamp_granularities[]``
(``segment`` and/or ``word``, verbose_json only), ``include[]`` (``logprobs``: with ``json``,
``logprobs`` has one ``{token, logprob, bytes}`` per word — the word's probability as a natural
log; other values → 400), ``stream`` (``true``: Server-Sent Events, see
:mod:`asrhub.transports.openai_stream`). ``model`` names a hub provider; ``whisper-1``
(and any model the hub does not know of the ``gpt-4o…-transcribe`` family) means the hub's
default provider; other names follow :meth:`asrhub.hub.Hub.resolve_model` (``whisper``,
``whisper:base``, ``whisper-base``, ``base``, ``tiny.en``). ``GET /v1/models`` lists the
providers (plus the ``whisper-1`` alias).

``POST /v1/audio/translations`` (multipart): ``file``, ``model``, ``prompt``,
``response_format``, ``temperature`` — English text from speech in any language (the model must
be multilingual: ``model=base``, or a hub whose default model is).

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with the hub's
contract code in ``code``: 400 bad input, 401 no/wrong key, 413 too large, 503 capacity.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from aiohttp import web

from asrhub.engine.finals import pieces, words_in
from asrhub.errors import HubError
from asrhub.hub import NO_PROVIDER, Hub
from asrhub.plugin import Transcription
from asrhub.protocol import encode_json

from . import openai_errors
from .batch import read_upload, transcribe_upload
from .common import HUB
from .openai_stream import stream_transcription

ALIASES = ("whisper-1",)
"""OpenAI model names that mean "the hub's default provider"."""
FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
CHUNKING = ("auto", "server_vad")
"""``chunking_strategy`` values (``"auto"``, or an object of ``type`` ``server_vad``): accepted;
the hub always cuts a file at its pauses (:mod:`asrhub.engine.uploads`)."""
CREATED = int(time.time())


def resolve_model(hub: Hub, model: str | None) -> str | None:
    """The provider a ``model`` field names (None: the hub's default)."""
    return resolve_provider_model(hub, model)[0]


def resolve_provider_model(hub: Hub, model: str | None) -> tuple[str | None, str | None]:
    """(provider, model of that provider) a ``model`` field names (None: defaults)."""
    if not model or model in ALIASES or (model.startswith("gpt-4o") and "transcribe" in model):
        return None, None
    try:
        return hub.resolve_model(model)
    except HubError as exc:
        raise HubError("unknown_provider", f"{exc.message}, {', '.join(ALIASES)}") from None


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(result: Transcription, duration: float) -> str:
    blocks = [
        f"{i}\n{_timestamp(p.start, ',')} --> {_timestamp(p.end, ',')}\n{p.text.strip()}\n"
        for i, p in enumerate(pieces(result, duration), start=1)
    ]
    return "\n".join(blocks) + ("\n" if blocks else "")


def to_vtt(result: Transcription, duration: float) -> str:
    blocks = [
        f"{_timestamp(p.start, '.')} --> {_timestamp(p.end, '.')}\n{p.text.strip()}\n"
        for p in pieces(result, duration)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_verbose(
    result: Transcription,
    duration: float,
    *,
    temperature: float,
    granularities: list[str],
    task: str = "transcribe",
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": task,
        "language": result.language or "",
        "duration": round(duration, 3),
        "text": result.text.strip(),
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": int(p.start * 100),
                "start": round(p.start, 3),
                "end": round(p.end, 3),
                "text": p.text,
                "tokens": [],
                "temperature": temperature,
                "avg_logprob": p.avg_logprob,
                "compression_ratio": p.compression_ratio,
                "no_speech_prob": p.no_speech_prob,
            }
            for i, p in enumerate(pieces(result, duration))
        ]
    if "word" in granularities:
        words = words_in(result.words, 0.0, duration) or ()
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for w in words]
    body["usage"] = _usage(duration)
    return body


INCLUDES = ("logprobs",)


def logprobs(result: Transcription) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs``: a token per word (the engine's words are the hub's tokens)."""
    return [
        {
            "token": w.word,
            "logprob": round(math.log(max(w.probability, 1e-12)), 6),
            "bytes": list(w.word.encode()),
        }
        for w in result.words or ()
    ]


def speaker_label(index: int | None) -> str:
    """OpenAI's speaker labels: ``A``, ``B``, … ``Z``, then ``AA``, ``AB``, …"""
    n = index or 0
    return ("" if n < 26 else chr(65 + n // 26 - 1)) + chr(65 + n % 26)


def to_diarized(result: Transcription, duration: float) -> dict[str, Any]:
    """``diarized_json`` (the SDK's ``TranscriptionDiarized``): one segment per speaker turn."""
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{i}",
            "start": round(p.start, 3),
            "end": round(p.end, 3),
            "text": p.text.strip(),
            "speaker": speaker_label(p.speaker),
        }
        for i, p in enumerate(pieces(result, duration))
        if p.text.strip()
    ]
    return {
        "task": "transcribe",
        "duration": round(duration, 3),
        "text": result.text.strip(),
        "segments": segments,
        "usage": _usage(duration),
    }


def _check_chunking(value: str | None, kind: str | None) -> None:
    """``chunking_strategy``: ``"auto"``, a JSON object, or the SDK's form fields
    (``chunking_strategy[type]=server_vad``)."""
    if value is None and kind is None:
        return
    if kind is None and value is not None:
        text = value.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            kind = parsed.get("type") if isinstance(parsed, dict) else None
        else:
            kind = text
    if kind not in CHUNKING:
        raise HubError(
            "bad_message",
            f'chunking_strategy must be "auto" or {{"type": "server_vad", …}}, not {value or kind!r}',
        )


def _usage(duration: float) -> dict[str, Any]:
    """OpenAI bills audio by the started second."""
    return {"type": "duration", "seconds": math.ceil(duration)}


async def transcriptions(request: web.Request) -> web.StreamResponse:
    return await _speech_to_text(request, "transcribe")


async def translations(request: web.Request) -> web.StreamResponse:
    return await _speech_to_text(request, "translate")


async def _speech_to_text(request: web.Request, task: str) -> web.StreamResponse:
    hub = request.app[HUB]
    upload = await read_upload(request)
    assert upload.data is not None
    fmt = upload.get("response_format") or "json"
    if fmt not in FORMATS:
        supported = ", ".join(FORMATS)
        raise HubError("bad_message", f"response_format {fmt!r} is not supported; use one of {supported}")
    try:
        temperature = float(upload.get("temperature") or 0.0)
    except ValueError:
        raise HubError("bad_message", "temperature must be a number") from None
    granularities = upload.get_all("timestamp_granularities[]") + upload.get_all("timestamp_granularities")
    include = upload.get_all("include[]") + upload.get_all("include")
    unknown = [i for i in include if i not in INCLUDES]
    if unknown:
        supported = ", ".join(INCLUDES)
        raise HubError("bad_message", f"include {unknown[0]!r} is not supported; use one of {supported}")
    provider, model = resolve_provider_model(hub, upload.get("model"))
    job: dict[str, Any] = {
        "provider": provider,
        "language": (upload.get("language") or None) if task == "transcribe" else None,
        "prompt": upload.get("prompt") or None,
        "model": model,
        "task": task,
    }
    _check_chunking(upload.get("chunking_strategy"), upload.get("chunking_strategy[type]"))
    if upload.get_all("known_speaker_names[]") or upload.get_all("known_speaker_names"):
        raise HubError("bad_message", "known_speaker_names is not supported: speakers are labelled A, B, …")
    if fmt == "diarized_json":
        if task != "transcribe":
            raise HubError("bad_message", "response_format diarized_json is for transcriptions only")
        job["diarize"] = True
    if (upload.get("stream") or "false").lower() == "true":
        if fmt == "diarized_json":
            raise HubError(
                "bad_message", "response_format diarized_json cannot be streamed here; send stream=false"
            )
        return await stream_transcription(request, upload.data, **job)
    name, result, duration = await transcribe_upload(hub, upload.data, **job)
    if fmt == "text":
        return web.Response(text=result.text.strip() + "\n", content_type="text/plain")
    if fmt == "srt":
        return web.Response(text=to_srt(result, duration), content_type="text/plain")
    if fmt == "vtt":
        return web.Response(text=to_vtt(result, duration), content_type="text/vtt")
    if fmt == "diarized_json":
        body = to_diarized(result, duration)
    elif fmt == "verbose_json":
        body = to_verbose(result, duration, temperature=temperature, granularities=granularities, task=task)
    else:
        body = {"text": result.text.strip(), "usage": _usage(duration)}
        if "logprobs" in include:
            body["logprobs"] = logprobs(result)
    return web.Response(
        body=encode_json(body), content_type="application/json", headers={"X-Asrhub-Provider": name}
    )


async def models(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    data: list[dict[str, Any]] = []
    for name, provider in sorted(hub.providers.items()):
        try:
            info = provider.describe()
            encode_json(info)
        except Exception:  # describing must never take the listing down
            info = {}
        data.append(
            {
                "id": name,
                "object": "model",
                "created": CREATED,
                "owned_by": "asrhub",
                "default": name == hub.default_provider,
                "info": info,
            }
        )
    if hub.router is not None:  # routing: docs/routing.md
        info = {"routing": "each utterance's engine chosen by language, health, load and key policy"}
        data.append({"id": "auto", "object": "model", "created": CREATED, "owned_by": "asrhub", "info": info})
    if hub.default_provider != NO_PROVIDER:
        for alias in ALIASES:
            data.append(
                {
                    "id": alias,
                    "object": "model",
                    "created": CREATED,
                    "owned_by": "asrhub",
                    "alias_of": hub.default_provider,
                }
            )
    return web.Response(body=encode_json({"object": "list", "data": data}), content_type="application/json")


def setup(app: web.Application) -> None:
    openai_errors.setup(app)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/translations", translations)
    app.router.add_get("/v1/models", models)
