"""Shared helpers for the operations tests: a real hub with the standard chain, real audio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from asrhub.hub import Hub
from asrhub.settings.schema import Settings
from tests.audio_utils import fixture, load_wav, pcm16_bytes

CHUNK_S = 0.1

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""A /metrics page as {(sample name, labels): value}."""


@asynccontextmanager
async def serving(hub: Hub, settings: Settings) -> AsyncIterator[str]:
    """The real app of ``hub`` on a free port of 127.0.0.1; its base URL. Shuts the hub down."""
    from asrhub.transports.app import create_app

    runner = web.AppRunner(create_app(hub, settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def parse_metrics(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape_url(http: aiohttp.ClientSession, base: str) -> Samples:
    """``GET {base}/metrics``, parsed."""
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse_metrics(await response.text())


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
