"""OpenAI-compatible servers on 127.0.0.1 for the ``openai`` provider tests.

* :func:`whisper_server` really transcribes: ``POST /v1/audio/transcriptions`` decodes the
  uploaded file with PyAV and runs faster-whisper (the bundled tiny.en, through a started
  :class:`~asrhub.providers.whisper.WhisperProvider`) on it. Nothing is canned: the reply is
  whatever the engine heard.
* :func:`fake_failing_server` injects faults the way real servers fail: HTTP 500 with an
  OpenAI-shaped error body, 429 rate limiting, or a request that never gets an answer.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import av
import numpy as np
from aiohttp import web

from asrhub.providers.whisper import WhisperProvider


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16_000)
        parts = [
            f.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for f in resampler.resample(frame)
        ]
        parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.float32)


async def _form(request: web.Request) -> tuple[bytes, dict[str, str]]:
    data, fields = b"", {}
    reader = await request.multipart()
    async for part in reader:
        if part.name == "file":
            data = await part.read()  # type: ignore[union-attr]
        elif part.name:
            fields[part.name] = (await part.read()).decode()  # type: ignore[union-attr]
    return data, fields


def whisper_app(engine: WhisperProvider) -> web.Application:
    async def transcriptions(request: web.Request) -> web.Response:
        data, fields = await _form(request)
        if fields.get("model") not in ("whisper-1", "tiny.en"):
            return web.json_response(
                {
                    "error": {
                        "message": f"model {fields.get('model')!r} not found",
                        "type": "invalid_request_error",
                    }
                },
                status=404,
            )
        samples = await asyncio.to_thread(decode, data)
        result = await engine.transcribe(
            samples, language=fields.get("language"), prompt=fields.get("prompt")
        )
        body: dict[str, Any] = {"text": result.text}
        if fields.get("response_format") == "verbose_json":
            body.update(
                task="transcribe",
                language="english",
                duration=len(samples) / 16_000,
                segments=[
                    {"id": i, "start": p.start, "end": p.end, "text": p.text}
                    for i, p in enumerate(result.segments)
                ],
                words=[{"word": w.word, "start": w.start, "end": w.end} for w in result.words or ()],
            )
        return web.json_response(body)

    app = web.Application(client_max_size=50 << 20)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    return app


class FakeFailingState:
    """What the fault-injecting server does next; tests flip ``mode`` between requests."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "500" | "429" | "hang"
        self.requests = 0


def fake_failing_app(state: FakeFailingState) -> web.Application:
    async def transcriptions(request: web.Request) -> web.Response:
        state.requests += 1
        await request.read()
        if state.mode == "hang":
            await asyncio.sleep(3600)
        if state.mode == "429":
            return web.json_response(
                {
                    "error": {
                        "message": "Rate limit reached for requests",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
                status=429,
                headers={"retry-after": "20"},
            )
        return web.json_response(
            {"error": {"message": "The engine crashed while decoding", "type": "server_error"}}, status=500
        )

    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    return app


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on a free port of 127.0.0.1; yields its ``/v1`` base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()
