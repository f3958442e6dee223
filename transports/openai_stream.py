"""``stream=true`` on ``POST /v1/audio/transcriptions``: the transcript as Server-Sent Events,
as OpenAI sends them.

::

    upload ──decode (off the loop)──▶ 16 kHz float32 ──feed──▶ hub session (VAD on, no partials)
    hub:    transcript.final(1) ────── transcript.final(2) ────── session.closed
    client: data: {"type": "transcript.text.delta", "delta": "…"} ×N, then
            data: {"type": "transcript.text.done", "text": "…", "usage": {…}}

The file is decoded first (a bad or too long file is a plain 400/413 in OpenAI's error shape,
before any event), then fed to an ordinary hub session — the same pipeline, engine pool, limits
and metrics (transport ``openai_stream``) as a live stream — at the speed its backpressure
allows. Each utterance's final becomes one ``delta`` the moment it is ready (deltas only ever
append: partials, which revise, are not used); ``done`` carries the whole text. An error after
the stream began (an utterance the engine failed, a slow reader) is sent as ``data: {"type":
"error", "error": {…}}`` — the ``openai`` SDK raises it as ``APIError`` — and ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

from aiohttp import web

from asrhub.errors import HubError
from asrhub.frames import TARGET_RATE, ErrorEvent, FinalTranscript, Samples, SessionClosed
from asrhub.protocol import encode_json

from .batch import decode_upload
from .common import HUB, KEY_ID
from .openai_errors import openai_error

TRANSPORT = "openai_stream"
CHUNK_SAMPLES = TARGET_RATE // 2
"""Samples per fed frame (0.5 s, 32 KiB of float32)."""


def _frame(body: dict[str, Any]) -> bytes:
    return b"data: " + encode_json(body) + b"\n\n"


def _error(error: HubError) -> bytes:
    return _frame({"type": "error", **openai_error(error)})


async def stream_transcription(
    request: web.Request,
    data: bytes,
    *,
    provider: str | None,
    language: str | None,
    prompt: str | None,
    model: str | None = None,
    task: str = "transcribe",
) -> web.StreamResponse:
    """The whole stream holds one turn of the hub's upload line (its decoded samples live as
    long as it does); a full line is a 503 ``capacity`` before any event."""
    hub = request.app[HUB]
    async with hub.uploads.turn():
        return await _stream(
            request, data, provider=provider, language=language, prompt=prompt, model=model, task=task
        )


async def _stream(
    request: web.Request,
    data: bytes,
    *,
    provider: str | None,
    language: str | None,
    prompt: str | None,
    model: str | None,
    task: str,
) -> web.StreamResponse:
    hub = request.app[HUB]
    samples: Samples = await asyncio.to_thread(decode_upload, data, hub.limits)
    config: dict[str, Any] = {
        "audio": {"encoding": "pcm_f32le", "sample_rate": TARGET_RATE, "channels": 1},
        "partials": False,
        "language": language,
        "prompt": prompt,
        "task": task,
    }
    if provider is not None:
        config["provider"] = provider
    if model is not None:
        config["model"] = model
    # errors: 400/503 JSON; a cluster-wide slot is taken when the hub is part of a cluster
    session = await hub.open_async(config, key=request.get(KEY_ID), transport=TRANSPORT)
    queue = session.queue(hub.limits.subscriber_queue)

    async def feed() -> None:
        for i in range(0, len(samples), CHUNK_SAMPLES):
            if session.closed:
                return
            await session.feed(samples[i : i + CHUNK_SAMPLES].tobytes())
        await session.end()

    feeder = asyncio.create_task(feed())
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    texts: list[str] = []
    try:
        await response.prepare(request)
        ended: str | None = None
        async for event in queue:
            if isinstance(event, FinalTranscript) and event.text.strip():
                delta = (" " if texts else "") + event.text.strip()
                texts.append(event.text.strip())
                await response.write(_frame({"type": "transcript.text.delta", "delta": delta}))
            elif isinstance(event, ErrorEvent):
                await response.write(_error(HubError(event.code, event.message)))
                ended = "error"
                break
            elif isinstance(event, SessionClosed):
                ended = event.reason
                break
        if ended == "end":
            usage = {"type": "duration", "seconds": math.ceil(len(samples) / TARGET_RATE)}
            done = {"type": "transcript.text.done", "text": " ".join(texts), "usage": usage}
            await response.write(_frame(done))
        elif ended != "error":
            await response.write(_error(HubError("provider_failed", f"the session ended: {ended}")))
        await response.write_eof()
    finally:
        queue.close()
        session.close("disconnected")
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError, HubError):
            await feeder
    return response
