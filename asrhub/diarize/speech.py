"""Where a recording has speech: webrtcvad on 30 ms frames, gaps under 0.3 s bridged, islands
under 0.2 s dropped. Regions in samples of 16 kHz audio."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import webrtcvad

RATE = 16000
FRAME = 480  # 30 ms
BRIDGE_S = 0.3
MIN_REGION_S = 0.2


def speech_regions(samples: npt.NDArray[np.float32], aggressiveness: int = 2) -> list[tuple[int, int]]:
    """(start, end) sample ranges of speech, in order; empty for silence."""
    n = len(samples) // FRAME
    if n == 0:
        return []
    pcm = (np.clip(samples[: n * FRAME], -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    vad = webrtcvad.Vad(aggressiveness)
    voiced = [vad.is_speech(pcm[2 * i * FRAME : 2 * (i + 1) * FRAME], RATE) for i in range(n)]
    regions: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate([*voiced, False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            regions.append((start * FRAME, i * FRAME))
            start = None
    merged: list[tuple[int, int]] = []
    for a, b in regions:
        if merged and a - merged[-1][1] < BRIDGE_S * RATE:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return [(a, b) for a, b in merged if b - a >= MIN_REGION_S * RATE]
