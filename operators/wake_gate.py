"""``wake_gate``: only the speech that follows a wake word reaches the provider.

Two states, driven by stream time (never arrival order, never the clock):

* LISTENING — audio is dropped (the last ``lookback_s`` of it is remembered); every event passes.
* ARMED at ``t`` (a ``wakeword.detected``) — audio at stream time ≥ ``t`` passes, trimmed at the
  sample. Remembered audio after ``t`` is released first, so a detection that arrives *after* the
  chunk it ends in loses nothing; audio before ``t`` that arrives later (the VAD gate's pre-roll)
  is dropped. In the wake word's own utterance the audio after ``t`` is held until it proves to
  be a command — ``confirm_s`` of it, or a ``vad.speech_ended`` at least ``min_command_s`` after
  ``t`` — so the silent tail of a lone "hey jarvis" never becomes a transcript. Back to
  LISTENING when

  - ``vad.speech_ended`` closes an utterance with at least ``min_command_s`` of speech after ``t``
    (the command is done; a pause right after the wake word keeps the gate armed for the next
    utterance), or
  - stream time reaches ``t + timeout_s`` (audio is cut there; without VAD events this is the
    only way back).

Events always pass untouched and in order; held audio goes out before the event that frees it::

    in:   ─S─a─W─b─E─s─c─e─S─d─E─|     S/E = vad.speech_started/ended, W = wakeword.detected
    out:  ─S───W───E─s─c─e─S───E─|     "hey jarvis" (a), a pause (b: too short, dropped),
                                       the command (c), then listening again (d)
"""

from __future__ import annotations

from collections import deque
from typing import Any

import reactivex
from reactivex import Observable, abc

from asrhub.frames import AudioChunk, Frame, SpeechEnded, SpeechStarted, WakeWordDetected
from asrhub.plugin import Operator

LOOKBACK_CHUNKS = 1024
"""A hard bound on remembered chunks, whatever their size."""


def clip(chunk: AudioChunk, start: float, end: float) -> AudioChunk | None:
    """The part of ``chunk`` in [start, end) stream seconds, to the nearest sample."""
    n, rate = len(chunk.samples), chunk.sample_rate
    i0 = max(0, min(n, round((start - chunk.start) * rate)))
    i1 = max(0, min(n, round((end - chunk.start) * rate)))
    if i0 >= i1:
        return None
    if i0 == 0 and i1 == n:
        return chunk
    return AudioChunk(chunk.samples[i0:i1], rate, chunk.start + i0 / rate, chunk.seq)


class Gate:
    """One session's gate state."""

    def __init__(self, timeout_s: float, min_command_s: float, confirm_s: float, lookback_s: float) -> None:
        self.timeout_s, self.min_command_s, self.confirm_s = timeout_s, min_command_s, confirm_s
        self.lookback_s = lookback_s
        self.armed_at: float | None = None
        self.utterance_start: float | None = None
        self.recent: deque[AudioChunk] = deque(maxlen=LOOKBACK_CHUNKS)
        self.held: list[AudioChunk] | None = None
        """Audio after ``t`` in the wake word's own utterance, until it proves to be a command."""

    @property
    def deadline(self) -> float:
        return (self.armed_at or 0.0) + self.timeout_s

    def on_frame(self, frame: Frame) -> list[Frame]:
        if isinstance(frame, AudioChunk):
            return self._audio(frame)
        out: list[Frame] = []
        if isinstance(frame, WakeWordDetected):
            self.armed_at = frame.t
            self.held = [] if self.utterance_start is not None else None
            released = [c for c in (clip(r, frame.t, self.deadline) for r in self.recent) if c]
            self.recent.clear()
            return [frame, *(part for c in released for part in self._audio(c))]
        if isinstance(frame, SpeechStarted):
            self.recent.clear()
            self.utterance_start = frame.t
            if self.armed_at is not None and frame.t >= self.deadline:
                self.armed_at = None
            elif self.armed_at is not None and frame.t < self.armed_at:  # the detection came first
                self.held = []
        elif isinstance(frame, SpeechEnded):
            self.recent.clear()
            if self.armed_at is not None:
                spoken = frame.t - max(self.armed_at, self.utterance_start or self.armed_at)
                if spoken >= self.min_command_s:
                    out, self.armed_at = list(self.held or []), None
                elif frame.t >= self.deadline:
                    self.armed_at = None
            self.held = None
            self.utterance_start = None
        return [*out, frame]

    def flush(self) -> list[Frame]:
        held, self.held = self.held or [], None
        return list(held)

    def _audio(self, chunk: AudioChunk) -> list[Frame]:
        if self.armed_at is None:
            self.recent.append(chunk)
            while self.recent and chunk.end - self.recent[0].end >= self.lookback_s:
                self.recent.popleft()
            return []
        part = clip(chunk, self.armed_at, self.deadline)
        if chunk.end >= self.deadline:
            self.armed_at = None
        if part is None:
            return []
        if self.held is None:
            return [part]
        self.held.append(part)
        if sum(c.duration for c in self.held) < self.confirm_s:
            return []
        held, self.held = self.held, None
        return list(held)


def wake_gate(
    *, timeout_s: float = 8.0, min_command_s: float = 0.3, confirm_s: float = 1.0, lookback_s: float = 2.0
) -> Operator:
    """Pass audio only from a wake word until its command ends (see the module docstring)."""

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            gate = Gate(timeout_s, min_command_s, confirm_s, lookback_s)

            def on_next(frame: Frame) -> None:
                for out in gate.on_frame(frame):
                    observer.on_next(out)

            def on_completed() -> None:
                for out in gate.flush():
                    observer.on_next(out)
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator
