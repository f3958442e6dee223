"""Wake-gated sessions end to end: a real Hub with the standard chain (asrhub.wiring) and the
whisper provider (faster-whisper tiny.en), fed the piper fixtures as a client would (PCM16 frames).

"Hey Jarvis, what is the weather today?" → one wakeword.detected and a final with the command;
"What is the weather today?" → neither detection nor transcript; both also at 20 dB SNR.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asrhub.engine.registry import ProviderRegistry
from asrhub.frames import Event, FinalTranscript, SpeechEnded, SpeechStarted, WakeWordDetected
from asrhub.hub import Hub
from asrhub.operators.wakeword_models import WakewordModels
from asrhub.wiring import build_pipeline
from tests.audio_utils import add_noise, load_wav, normalize_text, pcm16_bytes, room_noise

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RATE = 16_000
FRAME_BYTES = 3200  # 100 ms of PCM16 per message, as a browser client sends
WAKE = {"enabled": True, "names": ["hey_jarvis"], "threshold": 0.5}
NOISE = [None, ("pink", 20.0), ("white", 20.0)]
NOISE_IDS = ["clean", "pink20", "white20"]


def clip(name: str, noise: tuple[str, float] | None = None) -> np.ndarray:
    samples, rate = load_wav(FIXTURES / f"{name}.wav")
    assert rate == RATE
    return samples if noise is None else add_noise(samples, noise[1], seed=11, color=noise[0])


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    provider = ProviderRegistry.from_entry_points().create("whisper", {})
    chain = partial(build_pipeline, wakewords=WakewordModels())  # the hub's shared models, as build_hub does
    hub = Hub(providers={"whisper": provider}, pipeline_factory=chain, default_provider="whisper")
    await hub.start()
    yield hub
    await hub.shutdown(grace_s=5.0)


async def session_events(hub: Hub, samples: np.ndarray, **config: Any) -> list[Event]:
    session = hub.open({"provider": "whisper", "language": "en", **config})
    events: list[Event] = []
    session.events.subscribe(events.append)
    data = pcm16_bytes(samples)
    for i in range(0, len(data), FRAME_BYTES):
        await session.feed(data[i : i + FRAME_BYTES])
    assert await session.end() == "end"
    return events


def of(events: list[Event], kind: type[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize("noise", NOISE, ids=NOISE_IDS)
async def test_the_command_after_the_wake_word_is_transcribed(
    hub: Hub, noise: tuple[str, float] | None
) -> None:
    events = await session_events(hub, clip("hey_jarvis_weather", noise), wakeword=WAKE, partials=False)
    [detection] = of(events, WakeWordDetected)
    assert detection.name == "hey_jarvis" and 1.3 <= detection.t <= 2.3
    [final] = of(events, FinalTranscript)
    text = normalize_text(final.text)
    assert "weather" in text and "today" in text, final.text
    assert final.start >= detection.t - 1e-6  # only audio after the wake word reached whisper
    assert events.index(detection) < events.index(final)
    assert of(events, SpeechStarted) and of(events, SpeechEnded)


@pytest.mark.parametrize("noise", NOISE, ids=NOISE_IDS)
async def test_speech_without_the_wake_word_is_not_transcribed(
    hub: Hub, noise: tuple[str, float] | None
) -> None:
    samples = clip("no_wake_weather", noise)
    events = await session_events(hub, samples, wakeword=WAKE, partials=False)
    assert of(events, WakeWordDetected) == []
    assert of(events, FinalTranscript) == []
    assert of(events, SpeechStarted), "the VAD heard the speech; the wake gate kept it from whisper"
    # the control: the very same audio in a session without wake word is transcribed
    plain = await session_events(hub, samples, partials=False)
    assert "weather" in normalize_text(" ".join(f.text for f in of(plain, FinalTranscript)))


async def test_a_pause_after_the_wake_word_waits_for_the_command(hub: Hub) -> None:
    """'Hey Jarvis' · 2 s of room tone · 'What is the weather today?': the tail of the wake
    word's utterance makes no (empty or invented) transcript; the next utterance is the command."""
    hey = clip("hey_jarvis_weather")[: int(1.85 * RATE)]
    command = clip("no_wake_weather")[int(0.9 * RATE) :]
    samples = np.concatenate([hey, room_noise(2.0, seed=3), command])
    events = await session_events(hub, samples, wakeword=WAKE)
    assert len(of(events, WakeWordDetected)) == 1
    assert len(of(events, SpeechEnded)) == 2
    [final] = of(events, FinalTranscript)
    assert "weather" in normalize_text(final.text) and final.start > 3.0, final


async def test_after_the_command_the_session_listens_again(hub: Hub) -> None:
    samples = np.concatenate(
        [clip("hey_jarvis_weather"), clip("no_wake_weather"), clip("hey_jarvis_weather")]
    )
    events = await session_events(hub, samples, wakeword=WAKE, partials=False)
    detections = of(events, WakeWordDetected)
    finals = of(events, FinalTranscript)
    assert len(detections) == 2 and len(of(events, SpeechEnded)) == 3
    assert len(finals) == 2 and all("weather" in normalize_text(f.text) for f in finals)
    second_clip_end = (len(clip("hey_jarvis_weather")) + len(clip("no_wake_weather"))) / RATE
    assert finals[1].start > second_clip_end  # the middle utterance (no wake word) was dropped


async def test_an_unknown_wake_word_refuses_the_session(hub: Hub) -> None:
    from asrhub.errors import HubError

    with pytest.raises(HubError) as info:
        hub.open({"provider": "whisper", "wakeword": {"enabled": True, "names": ["hey_siri"]}})
    assert info.value.code == "bad_message" and "hey_jarvis" in info.value.message
    assert hub.sessions == {}
