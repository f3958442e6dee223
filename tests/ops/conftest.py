"""Shared helpers for the operations tests: a real hub with the standard chain, real audio."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asrhub.hub import Hub
from asrhub.settings import Settings
from tests.audio_utils import fixture, load_wav, pcm16_bytes

CHUNK_S = 0.1


def pcm_chunks(name: str, chunk_s: float = CHUNK_S) -> list[bytes]:
    """A fixture as 16 kHz PCM16 frames of ``chunk_s`` seconds, as a client would send them."""
    samples, rate = load_wav(fixture(name))
    assert rate == 16_000
    data = pcm16_bytes(samples)
    step = int(rate * chunk_s) * 2
    return [data[i : i + step] for i in range(0, len(data), step)]


@pytest.fixture
async def vad_hub() -> AsyncIterator[Hub]:
    """A hub whose sessions run decode → resample → vad_gate only (provider ``none``)."""
    from asrhub.wiring import build_hub

    hub = build_hub(Settings(default_provider="none"))
    await hub.start()
    try:
        yield hub
    finally:
        await hub.shutdown(grace_s=5.0)
