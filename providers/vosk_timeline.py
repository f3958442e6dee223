"""One Vosk session's bookkeeping between the recognizer's clock and stream time.

A recognizer counts the samples it was fed; stream time counts the samples the client sent. They
differ as soon as audio is skipped (VAD or wake gate upstream), so each jump in stream time is
marked at the recognizer offset where it happens. The audio of the utterance in progress is kept
too (bounded by ``max_s``) so a fallback engine can transcribe it if the recognizer fails.
Everything here runs on the event loop.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

import numpy as np

from asrhub.frames import AudioChunk, Samples, Word


class Timeline:
    def __init__(self, max_s: float) -> None:
        self.max_s = max_s
        self.rate = 0
        self.fed = 0  # samples received so far, in recognizer order
        self.end_t = 0.0
        self.marks: list[tuple[int, float]] = []  # (offset, stream time) where stream time jumps
        self.audio: deque[tuple[int, Samples]] = deque()  # (offset, samples) since the last final

    def add(self, chunk: AudioChunk) -> None:
        self.rate = self.rate or chunk.sample_rate
        if not self.marks or abs(chunk.start - self.end_t) > 1e-6:
            self.marks.append((self.fed, chunk.start))
        self.audio.append((self.fed, chunk.samples))
        while len(self.audio) > 1 and self.fed - self.audio[0][0] > self.max_s * self.rate:
            self.audio.popleft()
        self.fed += len(chunk.samples)
        self.end_t = chunk.end

    def at(self, offset: float) -> float:
        """Stream time of recognizer sample ``offset``."""
        if not self.marks:
            return 0.0
        i = max(bisect_right(self.marks, (offset, float("inf"))) - 1, 0)
        mark, t = self.marks[i]
        return round(t + (offset - mark) / self.rate, 3)

    def shift(self, words: tuple[Word, ...], origin: int) -> tuple[Word, ...]:
        """Words timed in seconds from recognizer sample ``origin`` → stream time."""
        r = self.rate
        return tuple(w.mapped(lambda t: self.at(origin + t * r)) for w in words)

    def utterance_start(self) -> float:
        return self.at(self.audio[0][0]) if self.audio else self.end_t

    def utterance(self, since: int, until: int) -> tuple[int, Samples]:
        """The kept audio between recognizer offsets ``since`` and ``until``: (offset, samples)."""
        mine = [(at, a) for at, a in self.audio if since <= at < until]
        if not mine:
            return until, np.zeros(0, np.float32)
        return mine[0][0], np.concatenate([a for _, a in mine])

    def kept_s(self, until: int) -> float:
        return (until - self.audio[0][0]) / self.rate if self.audio and self.rate else 0.0

    def forget(self, until: int) -> None:
        """Drop the audio and marks that only served the utterance ending at ``until``."""
        while self.audio and self.audio[0][0] + len(self.audio[0][1]) <= until:
            self.audio.popleft()
        i = bisect_right(self.marks, (until, float("inf"))) - 1
        if i > 0:
            del self.marks[:i]
