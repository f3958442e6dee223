"""Real stereo audio for the multichannel tests (issue 27): two real people, one a channel, the
right one answering after the left — a call recording's two sides.

Left: Allison Smith's Asterisk prompts "You are currently the only person in this conference"
and "Please enter the conference pin number" (Debian ``asterisk-core-sounds-en-wav``, 8 kHz,
CC-BY-SA-3.0); right: the alsa-utils ``speaker-test`` recordings "Front center", "Rear left",
"Side right" (48 kHz, GPL-2). Both packages are installed by ``scripts/setup.sh`` and read in
place (tests/speakers.py), never copied into the repository.
"""

from __future__ import annotations

import io
import wave

import numpy as np

from tests.speakers import ALSA, RATE, SOUNDS, VOICES, recording

LEFT = tuple(SOUNDS / VOICES["allison"][1] / f"{name}.wav" for name in ("conf-onlyperson", "conf-getpin"))
RIGHT = tuple(ALSA / f"{name}.wav" for name in ("Front_Center", "Rear_Left", "Side_Right"))
RIGHT_DELAY_S = 7.0
"""The right side answers once the left (about 6.3 s) is done, as on a call: heard apart, and
mixed to mono (the control) each side is still heard."""
GAP_S = 0.6
"""Silence between two recordings of one side (more than the VAD's hangover: one utterance each)."""
LEFT_WORDS, RIGHT_WORDS = (
    {"only", "person", "conference", "pin", "number"},
    {"front", "center", "rear", "side"},
)


def _side(paths: tuple[object, ...]) -> np.ndarray:
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    parts: list[np.ndarray] = []
    for path in paths:
        parts += [recording(path), gap]
    return np.concatenate(parts)


def stereo_pcm(channels: int = 2) -> bytes:
    """Interleaved 16 kHz PCM16: channel 0 ``LEFT``, channel 1 ``RIGHT`` from ``RIGHT_DELAY_S``,
    any further channel silent."""
    left, right = _side(LEFT), _side(RIGHT)
    delay = int(RIGHT_DELAY_S * RATE)
    n = max(len(left), delay + len(right)) + RATE // 2
    out = np.zeros((n, channels), np.float32)
    out[: len(left), 0] = left
    out[delay : delay + len(right), 1] = right
    return (np.clip(out, -1, 1) * 32767).astype("<i2").tobytes()


def stereo_wav(channels: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(stereo_pcm(channels))
    return buf.getvalue()


def words_of(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}
