"""``POST /v1/transcribe``: one whole file in, its transcript out.

The file comes as the multipart field ``file`` (optional fields ``provider``, ``language``,
``prompt``) or as the raw request body (the same options as query parameters). Any encoding
PyAV reads is accepted. The answer::

    {"text": "…", "segments": [transcript.final, …], "provider": "whisper",
     "language": "en", "duration": 3.24}

Shared with the OpenAI-compatible endpoint: :func:`read_upload` (size-capped, 413
``too_large`` past ``server.max_upload_bytes``) and :func:`transcribe_upload` (decode off the
event loop, then ``Hub.transcribe``; a full inference queue is 503 ``capacity``).
"""

from __future__ import annotations

import asyncio
import io
import wave
from dataclasses import dataclass, field
from typing import Any

import av
from aiohttp import BodyPartReader, web

from asrhub.api import load_audio
from asrhub.engine.finals import file_finals
from asrhub.errors import HubError
from asrhub.frames import TARGET_RATE, Samples
from asrhub.hub import Hub
from asrhub.plugin import PoolFull, Transcription
from asrhub.protocol import encode_json

from .common import HUB, SETTINGS, read_limited

MAX_FIELD_BYTES = 64 * 1024
MAX_AUDIO_S = 3600.0
"""Longest file accepted (413 ``too_large``): checked against the duration the container
declares before decoding, and while decoding for files that declare none — the decoded
samples are bounded, not only the upload's bytes."""


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


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise HubError("too_large", f"{what} exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_upload(request: web.Request) -> Upload:
    """The uploaded file and form fields; query parameters count as fields too."""
    limit = request.app[SETTINGS].server.max_upload_bytes
    length = request.content_length
    if length is not None and length > limit + MAX_FIELD_BYTES:
        raise HubError("too_large", f"upload of {length} bytes exceeds the limit of {limit}")
    upload = Upload(fields={k: request.query.getall(k) for k in request.query})
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise HubError("bad_message", "nested multipart bodies are not supported")
            if part.name == "file":
                upload.data = await _read_part(part, limit, "the file")
                upload.filename = part.filename
            elif part.name:
                value = await _read_part(part, MAX_FIELD_BYTES, f"field {part.name!r}")
                upload.fields.setdefault(part.name, []).append(value.decode("utf-8", "replace"))
    else:
        upload.data = await read_limited(request, limit, "the file") or None
    if not upload.data:
        raise HubError("bad_message", "no audio: send the file as multipart field 'file' or as the body")
    return upload


def _probe_duration(data: bytes) -> float | None:
    """The duration the container declares (cheap: no decoding), if any."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            return container.duration / av.time_base if container.duration else None
    except (av.FFmpegError, ValueError):
        return None  # the decoder reports what is wrong


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


def decode_upload(data: bytes) -> Samples:
    """Any container/codec PyAV reads → 16 kHz mono float32 (blocking: run it off the loop)."""
    declared = _probe_duration(data)
    if declared is not None and declared > MAX_AUDIO_S:
        raise HubError("too_large", f"the file lasts {declared:.0f} s; the limit is {MAX_AUDIO_S:.0f} s")
    try:
        return load_audio(data, max_s=MAX_AUDIO_S)
    except ValueError as exc:
        code = "too_large" if "longer than" in str(exc) else "bad_audio"
        raise HubError(code, f"cannot decode the file: {exc}") from None


async def transcribe_upload(
    hub: Hub, data: bytes, *, provider: str | None, language: str | None, prompt: str | None, **options: Any
) -> tuple[str, Transcription, float]:
    """Decode and transcribe; returns (provider name, transcription, duration in seconds).
    ``options``: ``model``, ``task``, ``keyterms`` (see :meth:`asrhub.hub.Hub.transcribe`)."""
    if options.get("model") is not None or options.get("task") not in (None, "transcribe"):
        hub.resolve_config({"provider": provider, **options})  # a bad model/task fails before decoding
    samples = await asyncio.to_thread(decode_upload, data)
    try:
        name, result = await hub.transcribe(
            samples, provider=provider, language=language, prompt=prompt, **options
        )
    except PoolFull as exc:
        raise HubError("capacity", f"the engine is at capacity ({exc}); retry later") from None
    return name, result, len(samples) / TARGET_RATE


async def transcribe(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    upload = await read_upload(request)
    assert upload.data is not None
    provider, model = upload.get("provider") or None, upload.get("model") or None
    if model is not None and provider is None:  # "base", "whisper:base": the mapping rule
        provider, model = hub.resolve_model(model)
    language = upload.get("language") or None
    name, result, duration = await transcribe_upload(
        hub,
        upload.data,
        provider=provider,
        language=language,
        prompt=upload.get("prompt") or None,
        model=model,
        task=upload.get("task") or "transcribe",
        keyterms=tuple(upload.get_all("keyterms") + upload.get_all("keyterms[]")),
    )
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
    return web.Response(body=encode_json(body), content_type="application/json")


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/transcribe", transcribe)
