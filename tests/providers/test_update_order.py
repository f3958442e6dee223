"""A live update holds in stream order on every engine: audio fed before a ``session.update`` is
transcribed with the settings it was fed under, whatever the engine and however late its
result comes.

Each test feeds utterance 1 and its trailing silence (the hub's VAD closes it), then — at once,
before its final exists — sends ``session.update`` turning word timestamps off, then feeds
utterance 2. Utterance 1's final must still carry its words, utterance 2's none. The engines
are the real ones: whisper (the batch stage), Vosk with the packaged Korean model, and FunASR
(2pass) and Google (streaming) against their local test servers (tests/servers/). Before the
update travelled only as a frame, ``Session.reconfigure`` also changed the shared context, and
the streaming engines (Vosk, FunASR, Google) read that when utterance 1's final came: it lost its
words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from asrhub.frames import Event, FinalTranscript, SessionUpdated
from asrhub.hub import Hub
from asrhub.plugin import Provider
from asrhub.providers.funasr import FunasrProvider
from asrhub.providers.funasr import parse_settings as funasr_settings
from asrhub.providers.google import GoogleProvider
from asrhub.providers.google import parse_settings as google_settings
from asrhub.providers.vosk import VoskProvider
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, load_wav, pcm16_bytes
from tests.servers.fake_funasr_server import FakeFunasrServer
from tests.servers.google_speech_server import LocalSpeechServer

from .conftest import make_hub

RATE = 16_000
FRAME = 3200  # 100 ms of PCM16


def clip(name: str) -> np.ndarray:
    samples, rate = load_wav(fixture(name))
    assert rate == RATE
    return samples


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


async def update_between(hub: Hub, one: np.ndarray, two: np.ndarray, **config: Any) -> list[Event]:
    """Utterance ``one`` and 1.2 s of silence, ``session.update`` at once, then ``two``."""
    session = hub.open({"word_timestamps": True, **config})
    events: list[Event] = []
    session.events.subscribe(events.append)
    before = pcm16_bytes(np.concatenate([silence(0.3), one, silence(1.2)]))
    after = pcm16_bytes(np.concatenate([two, silence(1.2)]))
    for i in range(0, len(before), FRAME):
        await session.feed(before[i : i + FRAME])
    finals_before = [e for e in events if isinstance(e, FinalTranscript)]
    hub.update(session, {"word_timestamps": False})
    for i in range(0, len(after), FRAME):
        await session.feed(after[i : i + FRAME])
    assert await session.end() == "end"
    assert finals_before == [], "utterance 1's final came before the update: the test proves nothing"
    return events


def check(events: list[Event]) -> None:
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert [f.segment_id for f in finals] == [1, 2], events
    assert any(isinstance(e, SessionUpdated) for e in events)
    assert finals[0].text and finals[0].words, f"audio fed before the update lost its words: {finals[0]}"
    assert finals[1].text and finals[1].words is None, f"the update did not hold after it: {finals[1]}"


async def run(provider: Provider, one: np.ndarray, two: np.ndarray, **config: Any) -> None:
    try:
        events = await update_between(make_hub({provider.name: provider}), one, two, **config)
    finally:
        await provider.close()
    check(events)


async def test_whisper_batch_stage_keeps_the_settings_of_audio_fed_before(whisper: WhisperProvider) -> None:
    await run(whisper, clip("quick_fox.wav"), clip("weather_question.wav"), language="en")


async def test_vosk_keeps_the_settings_of_audio_fed_before() -> None:
    provider = VoskProvider()
    await provider.start()
    await run(provider, clip("korean.wav"), clip("korean.wav"))


@pytest.fixture
async def funasr_server() -> AsyncIterator[FakeFunasrServer]:
    fake = FakeFunasrServer()
    await fake.start()
    yield fake
    await fake.close()


async def test_funasr_stream_keeps_the_settings_of_audio_fed_before(funasr_server: FakeFunasrServer) -> None:
    provider = FunasrProvider(funasr_settings({"url": funasr_server.url, "timeout": 120.0, "mode": "2pass"}))
    await provider.start()
    await run(provider, clip("quick_fox.wav"), clip("weather_question.wav"), language="en")


@pytest.fixture
async def google_server() -> AsyncIterator[LocalSpeechServer]:
    local = LocalSpeechServer()
    await local.start()
    yield local
    await local.close()


async def test_google_stream_keeps_the_settings_of_audio_fed_before(google_server: LocalSpeechServer) -> None:
    options = {"endpoint": google_server.endpoint, "insecure": True, "timeout": 120.0}
    provider = GoogleProvider(google_settings(options))
    await provider.start()
    await run(provider, clip("quick_fox.wav"), clip("weather_question.wav"), language="en-US")
