"""The standard chain in a real Session (provider none): decode → resample → vad_gate, on the loop."""

from __future__ import annotations

import numpy as np
import pytest

from asrhub.frames import Event, SessionClosed, SpeechEnded, SpeechStarted
from asrhub.hub import Hub
from asrhub.wiring import build_pipeline
from tests.audio_utils import encode, fixture, fixture_entry, load_wav, resample

SPEECH, RATE = load_wav(fixture("silences.wav"))


def client_bytes(kind: str) -> tuple[dict[str, object], bytes]:
    if kind == "f32-48k-stereo":
        x = resample(SPEECH, RATE, 48000)
        stereo = np.stack([x, x], axis=1).astype("<f4")
        return {"encoding": "pcm_f32le", "sample_rate": 48000, "channels": 2}, stereo.tobytes()
    x44 = resample(SPEECH, RATE, 44100)
    return {"encoding": kind}, encode(x44, 44100, kind)


@pytest.mark.parametrize("kind", ["f32-48k-stereo", "mp3", "webm"])
async def test_session_reports_each_utterance(kind: str) -> None:
    hub = Hub(providers={}, pipeline_factory=build_pipeline)
    audio, data = client_bytes(kind)
    session = hub.open({"audio": audio, "provider": "none"})
    events: list[Event] = []
    session.events.subscribe(events.append)
    for i in range(0, len(data), 4096):  # a client's frames; feed() awaits backpressure
        await session.feed(data[i : i + 4096])
    assert await session.end() == "end"
    assert isinstance(events[-1], SessionClosed) and events[-1].reason == "end"
    speech = [e for e in events if isinstance(e, SpeechStarted | SpeechEnded)]
    truth = fixture_entry("silences.wav")["segments"]
    assert [type(e) for e in speech] == [SpeechStarted, SpeechEnded] * len(truth)
    for started, seg in zip(speech[::2], truth, strict=True):
        assert abs(started.t - seg["start"]) < 0.15
    assert not [e for e in events if e.type == "error"]
