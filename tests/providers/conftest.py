"""Shared pieces of the whisper / vosk / openai provider tests.

Engines are real and loaded once per process (the providers cache their models), so a
function-scoped provider fixture costs a thread pool, not a model load. Hubs are real
:class:`~asrhub.hub.Hub` objects with the standard chain from :func:`asrhub.wiring.build_pipeline`.
The only fake here injects faults into a real provider, and says so in its name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import pytest

from asrhub.config import Limits
from asrhub.engine.batch_stage import batch_stage
from asrhub.frames import Event, FinalTranscript, Samples
from asrhub.hub import Hub
from asrhub.plugin import Operator, Priority, Provider, ProviderError, SessionContext, Transcription
from asrhub.providers.vosk import VoskProvider
from asrhub.wiring import build_pipeline
from tests.audio_utils import pcm16_bytes


@pytest.fixture
async def vosk() -> AsyncIterator[VoskProvider]:
    provider = VoskProvider()
    await provider.start()
    yield provider
    await provider.close()


def make_hub(providers: Mapping[str, Provider], *, default: str | None = None, **limits: Any) -> Hub:
    return Hub(
        providers=providers,
        pipeline_factory=build_pipeline,
        default_provider=default or next(iter(providers)),
        limits=Limits(**limits),
    )


async def run_session(
    hub: Hub,
    samples: Samples,
    config: Mapping[str, Any] | None = None,
    *,
    chunk_s: float = 0.1,
    speed: float | None = None,
) -> list[Event]:
    """Stream ``samples`` as PCM16 through a session; every event it produced, in order.

    ``speed``: feed at that multiple of real time (None: as fast as ``feed`` allows).
    """
    session = hub.open(config)
    events: list[Event] = []
    session.events.subscribe(events.append)
    data = pcm16_bytes(samples)
    step = int(16_000 * chunk_s) * 2
    for i in range(0, len(data), step):
        await session.feed(data[i : i + step])
        if speed is not None:
            await asyncio.sleep(chunk_s / speed)
    await session.end()
    return events


def finals(events: list[Event]) -> list[FinalTranscript]:
    return [e for e in events if isinstance(e, FinalTranscript)]


def text_of(events: list[Event]) -> str:
    return " ".join(f.text for f in finals(events) if f.text)


class FakeFailingProvider:
    """Fault injection around a real provider.

    The first ``ok_calls`` transcriptions are the real engine's; after that every call fails
    as ``mode`` says: ``"error"`` (ProviderError), ``"crash"`` (an unexpected exception),
    ``"hang"`` (never answers). ``slow_first`` delays the first call by that many seconds
    (an engine that is slow once), to shake the order in which results come back.
    """

    def __init__(
        self,
        inner: Provider,
        *,
        name: str = "fake_failing",
        ok_calls: int = 0,
        mode: str = "error",
        slow_first: float = 0.0,
    ) -> None:
        self.inner, self.name, self.ok_calls, self.mode = inner, name, ok_calls, mode
        self.slow_first = slow_first
        self.capabilities = inner.capabilities
        self.calls = 0

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        pass

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        self.calls += 1
        if self.calls == 1 and self.slow_first:
            await asyncio.sleep(self.slow_first)
        if self.calls > self.ok_calls:
            if self.mode == "hang":
                await asyncio.sleep(3600)
            if self.mode == "crash":
                raise RuntimeError("engine segfault simulated")
            raise ProviderError(f"{self.name} lost its engine after {self.ok_calls} calls")
        return await self.inner.transcribe(samples, language=language, prompt=prompt, priority=priority)

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def silence_gap(seconds: float) -> Samples:
    return np.zeros(int(seconds * 16_000), np.float32)
