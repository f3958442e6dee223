"""Sample-level helpers every operator and engine shares: PCM16 ↔ float32 (the one conversion
each way) and the quietest place to cut audio.

``float_to_pcm16`` is ``clip(x · 32768)`` truncated to int16, the exact inverse of
``pcm16_to_float`` (``x / 32768``): a client's PCM16 samples survive the round trip bit-exact,
and every engine that is fed int16 (Vosk, FunASR, Google, a WAV for OpenAI) gets the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from asrhub.frames import Samples

PCM16_SCALE = 32768.0
QUIET_FRAME_S = 0.02
"""The frame :func:`quietest_cut` measures energy over (20 ms)."""


def pcm16_to_float(x: bytes | memoryview | npt.NDArray[np.int16]) -> Samples:
    """Little-endian int16 → float32 in [-1, 1) (read back bit-exact by :func:`float_to_pcm16`)."""
    y = (np.frombuffer(x, "<i2") if not isinstance(x, np.ndarray) else x).astype(np.float32)
    y *= np.float32(1.0 / PCM16_SCALE)
    return y


def float_to_pcm16(x: npt.NDArray[Any]) -> bytes:
    """float32 → little-endian PCM16 bytes: ``clip(x · 32768)`` truncated."""
    y = x * np.float32(PCM16_SCALE)
    np.minimum(y, 32767.0, out=y)  # two ufuncs: a third of np.clip's Python overhead
    np.maximum(y, -32768.0, out=y)
    return y.astype("<i2").tobytes()


def quietest_cut(samples: Samples, rate: int, search_s: float) -> int:
    """Index of the middle of the quietest 20 ms frame in the last ``search_s`` seconds (at
    most half the audio); the latest of equally quiet frames, so the first piece stays long."""
    hop = max(1, round(QUIET_FRAME_S * rate))
    frames = min(round(search_s * rate), len(samples) // 2) // hop
    if frames < 1:
        return len(samples)
    first = len(samples) - frames * hop
    energy = np.square(samples[first:], dtype=np.float64).reshape(frames, hop).mean(axis=1)
    latest_min = frames - 1 - int(np.argmin(energy[::-1]))
    return first + latest_min * hop + hop // 2
