"""``POST /v1/transcribe``: one whole file in, its transcript out.

The file comes as the multipart field ``file`` (optional fields ``provider``, ``language``,
``prompt``; the formatting of the session config's ``format``: ``numerals``,
``profanity_filter`` — ``true``/``false`` —, ``redact`` — repeated or comma-separated classes
—, ``punctuate``; ``diarize=true`` with ``min_speakers`` / ``max_speakers`` adds a ``speaker`` to
every segment and word; ``multichannel``: each channel of a WAV on its own, segments tagged with
``channel``) or as the raw request body (the same options as query parameters). Accepted: the
audio containers docs/protocol.md lists (WAV, Ogg, WebM/Matroska, MP3, FLAC, AAC, MP4/M4A).
The answer::

    {"text": "…", "segments": [transcript.final, …], "provider": "whisper",
     "language": "en", "duration": 3.24}

With ``callback_url`` (and ``callback_method``): 202 ``{"job_id", "status", "status_url"}`` at
once, the answer POSTed to the URL later, signed (:mod:`~asrhub.transports.jobs`).

Shared with the OpenAI-compatible endpoint: :func:`read_upload` (size-capped, 413
``too_large`` past ``server.max_upload_bytes``, every byte counted, fields capped) and
:func:`transcribe_upload` (in the hub's upload line, decode off the event loop, then
``Hub.transcribe``; a full line or inference queue is 503 ``capacity``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import wave
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import BodyPartReader, web

from asrhub.api import load_audio, load_channels
from asrhub.config import MAX_SPEAKERS, FormatConfig, Limits
from asrhub.engine.finals import file_finals
from asrhub.errors import AudioTooLong, HubError
from asrhub.format import format_file
from asrhub.frames import TARGET_RATE, Samples
from asrhub.hub import Hub
from asrhub.jobs.queue import Job
from asrhub.plugin import PoolFull, Transcription
from asrhub.protocol import encode_json

from .common import HUB, SETTINGS, read_limited
from .jobs import accept, register_runner

MAX_SPEAKER_BOUND = 32
"""The largest ``min_speakers`` / ``max_speakers`` a request may name."""
MAX_FIELD_BYTES = 64 * 1024
"""One form field (``prompt``, ``language``, …) other than the file."""
MAX_FIELDS = 128
"""Form fields (parts) of one upload, the file included: room for 100 ``keyterms``."""
MAX_FORM_BYTES = 256 * 1024
"""Every field but the file together. A whole body may be ``server.max_upload_bytes`` + twice
this (room for part headers and boundaries), counted as it is read (chunked bodies too, which
carry no Content-Length)."""


@dataclass
class Upload:
    data: bytes | None = None
    filename: str | None = None
    fields: dict[str, list[str]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[-1] if values else None

    def get_all(self, name: str) -> list[str]:
        return self.fields.get(name, [])


class _Budget:
    """Every byte of a request body counted as it is read (the stream's own count: headers,
    boundaries and skipped parts included), against ``limit``."""

    def __init__(self, request: web.Request, limit: int) -> None:
        self.content, self.limit = request.content, limit

    def check(self) -> None:
        if self.content.total_bytes > self.limit:
            raise HubError("too_large", f"the upload exceeds the limit of {self.limit} bytes")


async def _read_part(part: BodyPartReader, limit: int, what: str, budget: _Budget) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise HubError("too_large", f"{what} exceeds the limit of {limit} bytes")
        budget.check()
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: web.Request) -> Upload:
    """The uploaded file and form fields; query parameters count as fields too. Bounds: the file
    ``server.max_upload_bytes``, each other field :data:`MAX_FIELD_BYTES`, :data:`MAX_FIELDS`
    parts, all of them but the file :data:`MAX_FORM_BYTES`, the whole body ``max_upload_bytes`` +
    2 × :data:`MAX_FORM_BYTES` — ``too_large`` past any."""
    limit = request.app[SETTINGS].server.max_upload_bytes
    length = request.content_length
    if length is not None and length > limit + 2 * MAX_FORM_BYTES:
        raise HubError("too_large", f"upload of {length} bytes exceeds the limit of {limit}")
    upload = Upload(fields={k: request.query.getall(k) for k in request.query})
    if request.content_type.startswith("multipart/"):
        budget = _Budget(request, limit + 2 * MAX_FORM_BYTES)
        reader = await request.multipart()
        parts = form = 0
        while (part := await reader.next()) is not None:
            budget.check()
            parts += 1
            if parts > MAX_FIELDS:
                raise HubError("too_large", f"more than {MAX_FIELDS} form fields")
            if not isinstance(part, BodyPartReader):
                raise HubError("bad_message", "nested multipart bodies are not supported")
            if part.name == "file":
                upload.data = await _read_part(part, limit, "the file", budget)
                upload.filename = part.filename
            elif part.name:
                value = await _read_part(part, MAX_FIELD_BYTES, f"field {part.name!r}", budget)
                form += len(value)
                if form > MAX_FORM_BYTES:
                    raise HubError("too_large", f"the form fields exceed {MAX_FORM_BYTES} bytes together")
                upload.fields.setdefault(part.name, []).append(value.decode("utf-8", "replace"))
    else:
        upload.data = await read_limited(request, limit, "the file") or None
    if not upload.data:
        raise HubError("bad_message", "no audio: send the file as multipart field 'file' or as the body")
    return upload


def pcm16_wav(pcm: bytes, rate: int, channels: int) -> bytes:
    """Raw little-endian PCM16 as a WAV file :func:`decode_upload` reads (a trailing partial
    sample frame is dropped): how the APIs that post raw audio (Deepgram's ``linear16``, Google's
    ``LINEAR16``) reach the upload path."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm[: len(pcm) // (2 * channels) * 2 * channels])
    return buf.getvalue()


def decode_upload(data: bytes, limits: Limits) -> Samples:
    """An accepted container or a PCM WAV → 16 kHz mono float32 (blocking: run it off the loop).
    ``too_large`` past ``limits.max_upload_s`` (declared, or counted while decoding),
    ``bad_audio`` for anything that does not decode."""
    try:
        return load_audio(data, max_s=limits.max_upload_s, max_rate=limits.max_input_rate)
    except AudioTooLong as exc:
        raise HubError("too_large", f"cannot decode the file: {exc}") from None
    except ValueError as exc:
        raise HubError("bad_audio", f"cannot decode the file: {exc}") from None


async def transcribe_upload(
    hub: Hub, data: bytes, *, provider: str | None, language: str | None, prompt: str | None, **options: Any
) -> tuple[str, Transcription, float]:
    """Decode and transcribe, in the hub's upload line (``limits.max_uploads`` at once; after
    ``limits.upload_wait_s`` in line: ``capacity``); returns (provider name, transcription,
    duration in seconds). ``options``: ``model``, ``task``, ``keyterms`` (see
    :meth:`asrhub.hub.Hub.transcribe`)."""
    config = {
        "provider": provider,
        "language": language,
        "prompt": prompt,
        "model": options.get("model"),
        "task": options.get("task") or "transcribe",
        "keyterms": list(options.get("keyterms") or ()),
    }
    hub.resolve_config({k: v for k, v in config.items() if v is not None})  # refused before any wait
    async with hub.uploads.turn():
        samples = await asyncio.to_thread(decode_upload, data, hub.limits)
        try:
            name, result = await hub.transcribe(
                samples, provider=provider, language=language, prompt=prompt, **options
            )
        except PoolFull as exc:
            raise HubError("capacity", f"the engine is at capacity ({exc}); retry later") from None
    return name, result, len(samples) / TARGET_RATE


def decode_channels(data: bytes, limits: Limits) -> list[Samples]:
    """A multichannel file (a PCM WAV) → each channel at 16 kHz mono (blocking). ``bad_audio``
    for a compressed file (its channels are not split: send a WAV) or more than
    ``limits.max_channels`` channels; ``too_large`` past ``limits.max_upload_s``."""
    try:
        channels = load_channels(data, max_s=limits.max_upload_s, max_channels=limits.max_channels)
    except AudioTooLong as exc:
        raise HubError("too_large", f"cannot decode the file: {exc}") from None
    except ValueError as exc:
        raise HubError("bad_audio", f"cannot decode the file: {exc}") from None
    if channels is None:
        raise HubError(
            "bad_audio", "multichannel needs a WAV file (or raw PCM): a compressed file is not split"
        )
    return channels


async def transcribe_channels(
    hub: Hub, data: bytes, *, provider: str | None, language: str | None, prompt: str | None, **options: Any
) -> tuple[str, list[Transcription], float]:
    """:func:`transcribe_upload` for each channel of a multichannel file on its own (in one turn
    of the upload line, one channel after the other: N times a mono file's engine time); returns
    (provider name of channel 0, one transcription per channel, duration in seconds)."""
    config = {"provider": provider, "language": language, "prompt": prompt, "model": options.get("model")}
    hub.resolve_config({k: v for k, v in config.items() if v is not None})
    async with hub.uploads.turn():
        channels = await asyncio.to_thread(decode_channels, data, hub.limits)
        results: list[Transcription] = []
        names: list[str] = []
        try:
            for samples in channels:
                name, result = await hub.transcribe(
                    samples, provider=provider, language=language, prompt=prompt, **options
                )
                names.append(name)
                results.append(result)
        except PoolFull as exc:
            raise HubError("capacity", f"the engine is at capacity ({exc}); retry later") from None
    return names[0], results, max(len(c) for c in channels) / TARGET_RATE


def _flag(upload: Upload, name: str, default: bool) -> bool:
    value = (upload.get(name) or "").strip().lower()
    if not value:
        return default
    if value not in ("true", "false", "1", "0"):
        raise HubError("bad_message", f"{name}={value!r}: expected true or false")
    return value in ("true", "1")


def format_of(upload: Upload) -> FormatConfig:
    """The request's formatting (fields ``numerals``, ``profanity_filter``, ``redact``,
    ``punctuate``), validated as the session config's ``format`` is."""
    redact = [c.strip() for raw in upload.get_all("redact") for c in raw.split(",") if c.strip()]
    fields = {
        "numerals": flag(upload.get("numerals"), "numerals"),
        "profanity_filter": flag(upload.get("profanity_filter"), "profanity_filter"),
        "redact": list(dict.fromkeys(redact)),
        "punctuate": flag(upload.get("punctuate"), "punctuate", default=True),
    }
    try:
        return msgspec.convert(fields, FormatConfig)
    except msgspec.ValidationError as exc:
        raise HubError("bad_message", f"format: {exc}") from None


def flag(value: str | None, name: str, *, default: bool = False) -> bool:
    """A form or query boolean (``true``/``false``, ``1``/``0``; absent: ``default``)."""
    if value is None or not value.strip():
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise HubError("bad_message", f"{name} must be true or false, not {value!r}")


def count(value: str | None, name: str, default: int) -> int:
    """A speaker count field (1–32)."""
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_SPEAKER_BOUND:
        raise HubError(
            "bad_message", f"{name} must be a whole number from 1 to {MAX_SPEAKER_BOUND}, not {value!r}"
        )
    return n


def diarize_options(diarize: bool, min_value: str | None, max_value: str | None) -> dict[str, Any]:
    """``diarize`` with its speaker bounds as :meth:`asrhub.hub.Hub.transcribe` takes them."""
    if not diarize:
        return {}
    low, high = count(min_value, "min_speakers", 1), count(max_value, "max_speakers", MAX_SPEAKERS)
    if low > high:
        raise HubError("bad_message", f"min_speakers ({low}) is more than max_speakers ({high})")
    return {"diarize": True, "min_speakers": low, "max_speakers": high}


async def transcribe(request: web.Request) -> web.Response:
    """The answer, or with ``callback_url`` 202 ``{"job_id", "status", "status_url"}`` at once
    and the same answer POSTed to the URL later (:mod:`~asrhub.transports.jobs`)."""
    upload = await read_upload(request)
    assert upload.data is not None
    callback = upload.get("callback_url")
    if callback:
        format_of(upload)  # bad options are refused now, not in the callback
        params = {k: v for k, v in upload.fields.items() if k not in ("callback_url", "callback_method")}
        job = await accept(
            request, "transcribe", params, upload.data, callback, upload.get("callback_method")
        )
        body = {"job_id": job.id, "status": job.state, "status_url": f"/v1/jobs/{job.id}"}
        return web.json_response(body, status=202)
    body = await _answer(request.app[HUB], upload)
    return web.Response(body=encode_json(body), content_type="application/json")


async def _run_job(hub: Hub, job: Job, last: bool) -> tuple[bytes, str | None]:
    """An upload with ``callback_url``: the synchronous answer, or the hub's error event."""
    try:
        return encode_json(await _answer(hub, Upload(data=job.data, fields=job.params))), None
    except HubError as exc:
        if exc.code == "capacity" and not last:
            raise  # tried again later
        return encode_json({**exc.to_event().to_dict(), "job_id": job.id}), exc.message


async def _answer(hub: Hub, upload: Upload) -> dict[str, Any]:
    assert upload.data is not None
    formatting = format_of(upload)
    provider, model = upload.get("provider") or None, upload.get("model") or None
    if model is not None and provider is None:  # "base", "whisper:base": the mapping rule
        provider, model = hub.resolve_model(model)
    language = upload.get("language") or None
    options: dict[str, Any] = {
        "provider": provider,
        "language": language,
        "prompt": upload.get("prompt") or None,
        "model": model,
        "task": upload.get("task") or "transcribe",
        "keyterms": tuple(upload.get_all("keyterms") + upload.get_all("keyterms[]")),
        **diarize_options(
            flag(upload.get("diarize"), "diarize"), upload.get("min_speakers"), upload.get("max_speakers")
        ),
    }
    if flag(upload.get("multichannel"), "multichannel"):
        return await _transcribe_channels(hub, upload.data, formatting, options)
    name, result, duration = await transcribe_upload(hub, upload.data, **options)
    result = await format_file(result, formatting, language)
    segments = [e.to_dict() for e in file_finals(name, result, duration, language)]
    body = {
        "text": result.text.strip(),
        "segments": segments,
        "provider": name,
        "language": result.language,
        "duration": round(duration, 3),
    }
    if result.language_probability is not None:
        body["language_probability"] = result.language_probability
    return body


async def _transcribe_channels(
    hub: Hub, data: bytes, formatting: FormatConfig, options: dict[str, Any]
) -> dict[str, Any]:
    """``multichannel=true``: each channel of a WAV on its own; ``segments`` of every channel by
    start time, each with its ``channel``; ``channels``: each channel's text."""
    language = options["language"]
    name, results, duration = await transcribe_channels(hub, data, **options)
    formatted = [await format_file(result, formatting, language) for result in results]
    segments = [
        dataclasses.replace(final, channel=i)
        for i, result in enumerate(formatted)
        for final in file_finals(name, result, duration, language)
    ]
    segments.sort(key=lambda f: (f.start, f.channel or 0))
    body = {
        "text": " ".join(r.text.strip() for r in formatted if r.text.strip()),
        "segments": [f.to_dict() for f in segments],
        "channels": [
            {"channel": i, "text": r.text.strip(), "language": r.language} for i, r in enumerate(formatted)
        ],
        "provider": name,
        "language": formatted[0].language if formatted else None,
        "duration": round(duration, 3),
    }
    return body


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/transcribe", transcribe)
    register_runner(app, "transcribe", _run_job)
