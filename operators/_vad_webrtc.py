"""webrtcvad as the ``vad_gate`` classifier: a voiced/unvoiced call per 20 ms frame.

webrtcvad keeps calling frames voiced for a while after any voiced frame (its own hangover, 4–5
frames of 20 ms per aggressiveness); the gate counts that hangover into its start condition
(:attr:`WebrtcClassifier.hangover_frames`), and its end condition counts silence after it
(the hangover comes on top of ``silence_ms``: 80–160 ms in all).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import webrtcvad
from _webrtcvad import process

HANGOVER_FRAMES = (5, 5, 4, 4)
"""20 ms frames webrtcvad still calls voiced after one voiced frame, per aggressiveness."""


class WebrtcClassifier:
    """One session's webrtcvad instance (about 1 kB of C state)."""

    end_frames = 0
    """Frames added to the silence count (none: the hangover is webrtcvad's own)."""

    def __init__(self, aggressiveness: int) -> None:
        self.handle = webrtcvad.Vad(aggressiveness)._vad  # _webrtcvad.process without the wrapper
        self.hangover_frames = HANGOVER_FRAMES[aggressiveness]
        self.rate = 0
        self._judge: Callable[[memoryview, int], int] = partial(process, self.handle, 0)

    def judge(self, pcm: bytes, pos: int, first: int, rate: int) -> Callable[[memoryview, int], int]:
        """The per-frame call for one chunk: (20 ms of PCM16, samples) → voiced (a C call)."""
        if rate != self.rate:
            self.rate, self._judge = rate, partial(process, self.handle, rate)
        return self._judge
