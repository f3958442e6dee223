"""Early finals (issue 14): at a pause the VAD hears before its hangover ends, the final decode
starts on the audio so far; speech that resumes drops it. Real faster-whisper, real webrtcvad,
real fixture speech; nothing is faked."""

from __future__ import annotations

import numpy as np

from asrhub.frames import ErrorEvent, Event, FinalTranscript
from asrhub.hub import Hub
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes, room_noise, wer

from .conftest import make_hub

RATE = 16_000


def speech(name: str) -> tuple[np.ndarray, str]:
    """The fixture's speech only (its quiet head and tail cut), and its text."""
    x, _ = load_wav(fixture(name))
    entry = fixture_entry(name)
    seg = entry["segments"][0]
    return x[int(seg["start"] * RATE) : int(seg["end"] * RATE)], entry["text"]


async def session_of(hub: Hub, audio: np.ndarray) -> tuple[list[Event], dict[str, int]]:
    session = hub.open({"language": "en", "partials": False})
    events: list[Event] = []
    session.events.subscribe(events.append)
    data = pcm16_bytes(audio)
    for i in range(0, len(data), 3200):
        await session.feed(data[i : i + 3200])
    await session.end()
    counts = session.ctx.early_finals
    return events, {"started": counts.started, "used": counts.used, "dropped": counts.dropped}


async def test_a_pause_shorter_than_the_hangover_never_splits_or_finalizes_early(
    whisper: WhisperProvider,
) -> None:
    one, text_one = speech("quick_fox.wav")
    two, text_two = speech("weather_question.wav")
    lead, pause, tail = room_noise(0.5, seed=1), room_noise(0.38, seed=2), room_noise(1.2, seed=3)
    audio = np.concatenate([lead, one, pause, two, tail])  # the pause: > early_final_ms, < 500 ms
    hub = make_hub({"whisper": whisper}, early_final_ms=200)
    events, counts = await session_of(hub, audio)
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert [f.segment_id for f in finals] == [1], [f.text for f in finals]  # one utterance
    assert wer(f"{text_one} {text_two}", finals[0].text) <= 0.15, finals[0].text
    assert not [e for e in events if isinstance(e, ErrorEvent)]
    assert counts["dropped"] >= 1  # the decode started at the short pause was thrown away
    assert counts["used"] == 1  # the one started at the real end served the final


async def one_utterance(
    whisper: WhisperProvider, name: str, early_final_ms: int, seed: int
) -> tuple[FinalTranscript, dict[str, int], float]:
    """A session of the fixture's speech alone, between 0.5 s and 1.2 s of room tone: its one
    final (checked against the fixture's text), the early-finals counts, the speech's length (s)."""
    one, text = speech(name)
    audio = np.concatenate([room_noise(0.5, seed=seed), one, room_noise(1.2, seed=seed + 1)])
    hub = make_hub({"whisper": whisper}, early_final_ms=early_final_ms)
    events, counts = await session_of(hub, audio)
    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert len(finals) == 1 and wer(text, finals[0].text) <= 0.1, finals
    return finals[0], counts, len(one) / RATE


async def test_an_utterance_that_ends_is_served_by_its_early_decode(whisper: WhisperProvider) -> None:
    final, counts, spoken_s = await one_utterance(whisper, "address_time.wav", early_final_ms=200, seed=4)
    assert counts["used"] == 1
    assert final.end >= spoken_s  # the final still spans the whole utterance


async def test_early_finals_off_changes_nothing(whisper: WhisperProvider) -> None:
    _, counts, _ = await one_utterance(whisper, "quick_fox.wav", early_final_ms=0, seed=6)
    assert counts == {"started": 0, "used": 0, "dropped": 0}
