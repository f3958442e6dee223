"""Wake-word detection runs off the event loop in a hub session, and keeps its order.

Real openWakeWord models and the real fixture; the only addition is a spy on ``Detector.feed``
that records the thread each call runs on (the detector itself is untouched)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from asrhub.config import Limits
from asrhub.frames import Event, SpeechEnded, SpeechStarted, WakeWordDetected
from asrhub.hub import Hub
from asrhub.operators.wakeword import Detector
from asrhub.wiring import build_pipeline
from tests.audio_utils import fixture, load_wav, pcm16_bytes


async def test_detection_runs_in_worker_threads_and_events_keep_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []
    real = Detector.feed

    def spy(self: Detector, chunk: Any) -> Any:
        threads.append(threading.current_thread())
        return real(self, chunk)

    monkeypatch.setattr(Detector, "feed", spy)
    hub = Hub(providers={}, pipeline_factory=build_pipeline, limits=Limits())
    session = hub.open({"provider": "none", "wakeword": {"enabled": True}})
    events: list[Event] = []
    session.events.subscribe(events.append)
    samples, _ = load_wav(fixture("hey_jarvis_weather.wav"))
    data = pcm16_bytes(samples)
    await session.feed(data[: len(data) // 2])  # big frames: many 80 ms steps in one call
    await session.feed(data[len(data) // 2 :])
    assert await session.end() == "end"
    loop_thread = threading.current_thread()
    assert threads and all(t is not loop_thread for t in threads)  # never on the event loop
    kinds = [type(e) for e in events if isinstance(e, WakeWordDetected | SpeechStarted | SpeechEnded)]
    assert kinds.count(WakeWordDetected) == 1
    detected = next(e for e in events if isinstance(e, WakeWordDetected))
    assert 0.5 < detected.t < 2.5  # "hey jarvis" is at the start of the clip
    assert kinds[-1] is SpeechEnded  # the VAD events still come after the audio they describe
