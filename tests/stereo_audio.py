"""Real stereo audio for the multichannel tests (issue 27): two real recordings, one a channel,
the right one starting later — a call recording's two sides."""

from __future__ import annotations

import io
import wave

import numpy as np

from tests.audio_utils import fixture, fixture_entry, load_wav

LEFT, RIGHT = "quick_fox.wav", "weather_question.wav"
RIGHT_DELAY_S = 2.0
LEFT_WORDS, RIGHT_WORDS = {"fox", "dog", "lazy"}, {"weather", "boston", "tomorrow"}


def stereo_pcm(channels: int = 2) -> bytes:
    """Interleaved 16 kHz PCM16: channel 0 ``LEFT``, channel 1 ``RIGHT`` from ``RIGHT_DELAY_S``,
    any further channel silent."""
    left, rate = load_wav(fixture(LEFT))
    right, rate_r = load_wav(fixture(RIGHT))
    assert rate == rate_r == 16_000
    delay = int(RIGHT_DELAY_S * rate)
    n = max(len(left), delay + len(right)) + rate // 2
    out = np.zeros((n, channels), np.float32)
    out[: len(left), 0] = left
    out[delay : delay + len(right), 1] = right
    return (np.clip(out, -1, 1) * 32767).astype("<i2").tobytes()


def stereo_wav(channels: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(stereo_pcm(channels))
    return buf.getvalue()


def words_of(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


def texts() -> tuple[str, str]:
    return fixture_entry(LEFT)["text"], fixture_entry(RIGHT)["text"]
