"""``vad_gate``: pass speech, drop silence, mark the edges — webrtcvad or Silero, on 20 ms frames.

::

    in:    --a0--a1--a2--a3--a4--a5--a6--|        (a2…a4 speech)
    out:   ------------S-p-a3--a4--a5-E-|         S = SpeechStarted(t), p = pre-roll + onset
                                                  E = SpeechEnded(t), after ``silence_ms`` unvoiced

* Frames: chunks of any size are cut into 20 ms frames (a partial frame waits in a carry).
* Classifier (``engine``): ``webrtc`` judges each frame (``_vad_webrtc``); ``silero`` scores
  32 ms windows with a shared ONNX model and a frame reads the last window that ended by its end
  (``_vad_silero``, ``threshold`` with hysteresis). Either gives voiced/unvoiced per frame; the
  rest of the gate is the same for both. On a running event loop a Silero session's chunks wait
  (with every frame behind them, in order) for the model to score their windows off the loop,
  batched with other sessions' (``SileroBatcher``); while more than ``MAX_WAITING_S`` of audio
  waits, the session's ``pending`` is held. Without a loop (a marble test) it scores inline.
* Start: k voiced frames within a sliding window of ``max(k + 2, 1.5 k)`` frames, where
  k = ⌈start_ms / 20⌉ + the classifier's own hangover (webrtcvad: 4–5 frames, after any voiced
  frame it reports 80–100 ms more; Silero: none), so ``start_ms`` is voiced audio beyond that
  hangover: one noisy frame never opens the gate, and one unvoiced frame does not delay it.
  ``SpeechStarted.t`` is the start of the first voiced frame in that window; it is followed by
  the audio from up to ``preroll_ms`` before it up to the deciding frame (from a bounded ring),
  then the speech audio.
* End: ``silence_ms`` of consecutive unvoiced frames (as webrtcvad reports them, so its own
  hangover of 80–160 ms comes on top; Silero counts 80 ms more instead, so ``silence_ms`` means
  the same wall-clock silence with either engine). ``SpeechEnded.t`` is the end of the last voiced frame; the
  hangover audio up to the deciding frame is passed (not trimmed) and goes before the event.
  On completion inside speech: ``SpeechEnded`` then completion.
* Early-final hint (``pause_ms`` > 0, shorter than the hangover): inside speech, after
  ``pause_ms`` of consecutive unvoiced frames, an internal ``SpeechPaused(t)`` hint (``t`` = end
  of the last voiced frame) follows the audio up to that frame; ``segment`` makes it a
  speculative Segment. Speech that resumes before ``silence_ms`` keeps the utterance whole.
* ``audio=False`` (nothing after the gate reads audio: no engine, no wake word): the same events
  at the same times, but no pre-roll is kept and no audio is passed on.
* Audio outside speech is dropped; other frames pass through in order. Output chunks are views
  of the input samples (no copy) with their own ``seq``. A gap in stream time resets the carry
  and the pre-roll. Bound: the pre-roll keeps references to the last pre-roll + window + one
  frame of audio, plus at most one input chunk.
* Semantic end of turn (``turn`` of type ``semantic``, with the hub's ``turn_model``): the
  utterance ends after the short silence of its eagerness if the turn model (reading the
  utterance's last 8 s) says the turn is finished, else after the long silence
  (``asrhub.config.TURN_TIMING``; ``silence_ms`` does not apply). Each pause that reaches half
  the short silence is a ``SpeechPaused`` hint, so the final decode starts while the pause grows
  to the short silence and the model reads (the final of a finished turn is that decode, begun
  half the short silence sooner: 100 ms at ``medium``); a pause that reaches the short silence is a
  question to the model, asked at the end of that chunk; a pause that goes on to the
  *second look* (``_turn_end.second_look_ms``: 3× the short silence, at most half the long one)
  asks once more, on the longer tail (a finished turn the model doubted at first ends there
  instead of after the long silence); speech that resumes and pauses again asks again. Off the
  loop, later frames wait for the verdict in order (``_turn_end``), and the ``SpeechEnded`` of a
  finished turn comes at the position the question was asked at: the decision does not depend on
  how fast audio is fed. ``type`` ``silence``: as above.
* ``audio=False`` (nothing after the gate reads audio: no engine, no wake word): the same events
  at the same times, but no pre-roll is kept and no audio is passed on.
* Audio outside speech is dropped; other frames pass through in order. Output chunks are views
  of the input samples (no copy) with their own ``seq``. A gap in stream time resets the carry
  and the pre-roll. Bound: the pre-roll keeps references to the last pre-roll + window + one
  frame of audio, plus at most one input chunk.
* Live reconfiguration: a ``session.updated`` frame carries new ``vad`` settings
  (engine, aggressiveness, threshold, start_ms, silence_ms, preroll_ms) and ``turn_detection``;
  they hold from the next utterance on (at once between utterances, else when the current one
  ends). The frame passes on in order.
* The classifiers read int16: ``clip(x · 32768)``, which for audio decoded from PCM16 is the
  client's own samples. A chunk that carries them (``Pcm16Chunk`` from ``decode``) is read as is, with no
  float → int16 conversion, and the pre-roll keeps its bytes (half the memory of float32, read
  back bit-exact); float-only chunks are kept as float32 views.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from asrhub.config import TurnDetection
from asrhub.flow import Pending, Stage
from asrhub.frames import (
    AudioChunk,
    Frame,
    Samples,
    SessionUpdated,
    SpeechEnded,
    SpeechPaused,
    SpeechStarted,
)
from asrhub.pcm import float_to_pcm16, pcm16_to_float
from asrhub.plugin import EarlyFinals, Operator

from ._pcm import Pcm16Chunk
from ._turn_end import TurnEnd, second_look_ms
from ._vad_silero import SileroClassifier, SileroVad
from ._vad_waiting import MAX_WAITING_S, Waiting
from ._vad_webrtc import WebrtcClassifier
from .turn_model import TurnModel

__all__ = ["MAX_WAITING_S", "SileroVad", "vad_gate"]

FRAME_MS = 20
EARLY_SHARE = 0.5
"""Semantic turns: the early final starts at this share of the short silence (its decode, ~0.5 s of
tiny.en on 2 cores, is what a finished turn's final waits for; a pause that ends sooner costs one
dropped decode)."""


class Classifier(Protocol):
    """How a 20 ms frame is judged voiced (one per session)."""

    hangover_frames: int
    """Frames the engine keeps calling voiced after speech (counted into the start condition)."""
    end_frames: int
    """Unvoiced frames added to ``silence_ms`` (an engine without a hangover of its own)."""

    def judge(self, pcm: bytes, pos: int, first: int, rate: int) -> Callable[[memoryview, int], int]:
        """Called once per chunk with its PCM16 (at stream position ``pos``; the chunk's first
        frame starts at ``first``); returns the call that judges each of its frames in order:
        (the frame's PCM16, its samples) → voiced."""
        ...


def classifier(
    engine: str, aggressiveness: int, threshold: float, silero: SileroVad | None
) -> WebrtcClassifier | SileroClassifier:
    """A session's classifier. Silero loads its model here if its owner has not (raises
    :class:`~asrhub.errors.HubError` when the model is missing)."""
    if engine == "silero":
        return SileroClassifier((silero or SileroVad()).model(), threshold)
    return WebrtcClassifier(aggressiveness)


def _params(judge: Classifier, start_ms: int, silence_ms: int) -> tuple[int, int, int]:
    """(k voiced frames to start, the window they must fall in, unvoiced frames to end)."""
    k = max(1, math.ceil(start_ms / FRAME_MS)) + judge.hangover_frames
    return k, max(k + 2, math.ceil(1.5 * k)), max(1, math.ceil(silence_ms / FRAME_MS)) + judge.end_frames


def vad_gate(
    *,
    engine: str = "webrtc",
    aggressiveness: int = 2,
    threshold: float = 0.5,
    start_ms: int = 90,
    silence_ms: int = 500,
    preroll_ms: int = 300,
    pause_ms: int = 0,
    audio: bool = True,
    silero: SileroVad | None = None,
    pending: Pending | None = None,
    turn: TurnDetection | None = None,
    turn_model: TurnModel | None = None,
    early: EarlyFinals | None = None,
) -> Operator:
    """``silero``: the owner's shared Silero model (None: a Silero gate loads one of its own).
    ``pending``: the session's, held while more than ``MAX_WAITING_S`` of its audio waits for
    the Silero model, and while the turn model judges a pause off the loop (``feed`` waits).
    ``turn``: how utterances end (semantic needs ``turn_model``, the hub's shared one);
    ``early``: the session's early finals, whose text the end of turn also reads."""
    silero = silero or SileroVad()
    if engine == "silero":
        silero.model()  # a missing model refuses the session here, before any audio flows
    pause_frames = math.ceil(pause_ms / FRAME_MS) if pause_ms > 0 else 0
    if turn is not None and turn.semantic and turn_model is None:
        raise ValueError("semantic turn detection needs the turn model")
    if turn is not None and turn.semantic and turn_model is not None:
        turn_model.load()  # a missing model refuses the session here, with the set-up hint

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: Any = None) -> abc.DisposableBase:
            judge = classifier(engine, aggressiveness, threshold, silero)
            k, window, end_frames = _params(judge, start_ms, silence_ms)
            gate = _Gate(observer, judge, k, window, end_frames, preroll_ms)
            gate.silero = silero
            gate.pause_frames = gate.early_frames = pause_frames
            gate.audio = audio
            if turn_model is not None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                gate.turn_end = TurnEnd(turn_model, pending, loop, early)
            gate.set_turn(turn)

            def handle(frame: Frame) -> None:
                turn_end = gate.turn_end
                if turn_end is not None and turn_end.waiting:  # a verdict is due: keep the order
                    turn_end.hold(frame)
                    return
                if not isinstance(frame, AudioChunk):
                    if isinstance(frame, SessionUpdated) and frame.settings is not None:
                        try:
                            gate.reconfigure(frame.settings.vad)
                        except Exception as exc:
                            observer.on_error(exc)
                            return
                        gate.set_turn(frame.settings.turn_detection)
                    observer.on_next(frame)
                    return
                try:
                    gate.chunk(frame)
                    if gate.asking:
                        gate.ask(handle, complete)
                except Exception as exc:
                    observer.on_error(exc)

            def complete() -> None:
                turn_end = gate.turn_end
                if turn_end is not None and turn_end.waiting:
                    turn_end.hold(None)
                    return
                if gate.speaking:
                    observer.on_next(SpeechEnded(t=gate.last_voiced_end / gate.rate))
                observer.on_completed()

            waiting = Waiting(silero, handle, complete, observer.on_error, pending)  # for Silero

            def on_next(frame: Frame) -> None:
                if gate.batching or waiting.queue:
                    waiting.put(frame, gate.classifier)
                else:
                    handle(frame)

            subscription = source.subscribe(
                on_next, observer.on_error, waiting.completed, scheduler=scheduler
            )
            disposables = CompositeDisposable(subscription, Disposable(waiting.dispose))
            if gate.turn_end is not None:
                disposables.add(Disposable(gate.turn_end.dispose))
            return disposables

        return Stage(subscribe)

    return operator


class _Gate:
    """One subscription's state. Positions are absolute sample indices in stream time."""

    def __init__(
        self,
        observer: abc.ObserverBase[Frame],
        judge: Classifier,
        k: int,
        window: int,
        end: int,
        preroll_ms: int,
    ):
        self.observer, self.classifier = observer, judge
        self.batching = isinstance(judge, SileroClassifier)  # its chunks may wait for a batch
        self.silero: SileroVad | None = None
        self.k, self.mask, self.end_frames, self.preroll_ms = k, (1 << window) - 1, end, preroll_ms
        self.window = window
        self.rate = self.flen = self.size = 0
        self.carry = b""
        self.expected = -1
        self.hist = 0  # bit i set: the frame i frames ago was voiced
        self.speaking = False
        self.unvoiced = self.last_voiced_end = 0
        self.kept: deque[tuple[int, bytes | Samples]] = deque()  # pre-roll: (samples, PCM16 or float32)
        self.kept_len = self.kept_end = 0
        self.seq = 0
        self.pending: Any = None  # vad settings of a session.update, waiting for the utterance's end
        self.pause_frames = 0  # unvoiced frames inside speech that make a SpeechPaused hint (0: none)
        self.audio = True  # False: events only (no pre-roll, no speech audio passed on)
        self.silence_frames, self.early_frames = end, 0  # silence mode: hangover, early-final pause
        self.turn_end: TurnEnd | None = None  # the turn model's per-session state (None: not wired)
        self.turn: TurnDetection | None = None
        self.pending_turn: tuple[TurnDetection | None] | None = None  # from session.update
        self.asking = False  # a pause reached the short silence in this chunk: ask the turn model
        self.second_frames = 0  # semantic: the unvoiced frames of the second look (0: none)
        self.ask_frames = 0  # semantic: the unvoiced frames of the short silence (the first look)

    def set_turn(self, turn: TurnDetection | None) -> None:
        """How utterances end: now between utterances, else when this one ends."""
        self.pending_turn = (turn,)
        if not self.speaking:
            self._apply_turn()

    def _apply_turn(self) -> None:
        if self.pending_turn is None:
            return
        (turn,), self.pending_turn = self.pending_turn, None
        semantic = turn is not None and turn.semantic and self.turn_end is not None
        self.turn = turn if semantic else None
        self._timing()

    def _timing(self) -> None:
        """End and pause frames from the VAD's hangover, the early-final pause and the turn mode."""
        if self.turn is not None:
            short_ms, max_ms = self.turn.timing_ms
            extra = self.classifier.end_frames  # an engine without a hangover of its own waits more
            self.ask_frames = math.ceil(short_ms / FRAME_MS) + extra
            self.pause_frames = max(1, math.ceil(short_ms * EARLY_SHARE / FRAME_MS) + extra)
            self.end_frames = max(self.ask_frames + 1, math.ceil(max_ms / FRAME_MS) + extra)
            second = math.ceil(second_look_ms(short_ms, max_ms) / FRAME_MS) + extra
            self.second_frames = second if self.ask_frames < second < self.end_frames else 0
        else:
            self.pause_frames, self.end_frames = self.early_frames, self.silence_frames
            self.ask_frames = self.second_frames = 0

    def ask(self, on_next: Any, on_completed: Any) -> None:
        """Ask the turn model about the pause that ends the audio so far; once it answers, the
        frames held meanwhile go on (through ``on_next`` / ``on_completed``)."""
        self.asking = False
        turn_end, position = self.turn_end, self.expected
        if turn_end is None:
            return

        def verdict(finished: bool) -> None:
            if finished and self.speaking and self.unvoiced >= self.ask_frames:
                self._end(position)
            turn_end.replay(on_next, on_completed)

        turn_end.ask(verdict, self.last_voiced_end / self.rate)

    def reconfigure(self, vad: Any) -> None:
        """New VAD settings (a ``VadConfig``): now between utterances, else at this one's end."""
        self.pending = vad
        if not self.speaking:
            self._apply()

    def _apply(self) -> None:
        vad, self.pending = self.pending, None
        if vad is None:
            return
        self.classifier = classifier(vad.engine or "webrtc", vad.aggressiveness, vad.threshold, self.silero)
        self.batching = isinstance(self.classifier, SileroClassifier)
        self.k, window, self.silence_frames = _params(self.classifier, vad.start_ms, vad.silence_ms)
        self._timing()
        self.window, self.mask, self.preroll_ms = window, (1 << window) - 1, vad.preroll_ms
        self.hist &= self.mask
        if self.rate:
            self._setup(self.rate)  # pre-roll and ring sizes follow

    def _setup(self, rate: int) -> None:
        if rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"vad_gate needs 8/16/32/48 kHz audio, got {rate} Hz (resample first)")
        self.rate, self.flen = rate, rate * FRAME_MS // 1000
        self.preroll = rate * self.preroll_ms // 1000
        self.size = self.preroll + (self.window + 1) * self.flen

    def chunk(self, c: AudioChunk) -> None:
        if c.sample_rate != self.rate:
            self._setup(c.sample_rate)
            self.carry, self.expected = b"", -1
        pos0, flen, rate = round(c.start * self.rate), self.flen, self.rate
        if type(c) is Pcm16Chunk:  # the client's samples as they came (no float32 read)
            pcm = c.pcm
            n = len(pcm) >> 1
        else:
            pcm = float_to_pcm16(c.samples)
            n = len(c.samples)
        if pos0 != self.expected:  # first chunk or a gap: frames and pre-roll restart here
            self.carry = b""
            self._forget(pos0)
            self.hist = 0 if not self.speaking else self.hist
        self.expected = pos0 + n
        data = self.carry + pcm if self.carry else pcm
        mv, fbytes = memoryview(data), 2 * flen
        fend = pos0 - len(self.carry) // 2
        judge = self.classifier.judge(pcm, pos0, fend, rate)
        cursor = pos0
        # The state machine runs on locals (written back before any call that reads them, and
        # read again after _end, whose pending settings may change k, mask and end_frames).
        speaking, hist, k, mask = self.speaking, self.hist, self.k, self.mask
        unvoiced, last_voiced_end, end_frames = self.unvoiced, self.last_voiced_end, self.end_frames
        for off in range(0, len(data) - fbytes + 1, fbytes):
            fend += flen
            voiced = judge(mv[off : off + fbytes], flen)
            if not speaking:
                hist = ((hist << 1) | voiced) & mask
                if hist.bit_count() >= k:
                    self.hist = hist
                    self._route(c, cursor - pos0, fend - pos0, cursor)
                    cursor = fend
                    self._start(fend)
                    speaking, unvoiced, last_voiced_end = True, 0, fend
            elif voiced:
                unvoiced, last_voiced_end = 0, fend
            else:
                unvoiced += 1
                if unvoiced >= end_frames:
                    self.unvoiced, self.last_voiced_end = unvoiced, last_voiced_end
                    self._route(c, cursor - pos0, fend - pos0, cursor)
                    cursor = fend
                    self._end(fend)
                    speaking, hist, k, mask = False, self.hist, self.k, self.mask
                    unvoiced, end_frames = self.unvoiced, self.end_frames
                    self.asking = False
                else:
                    if unvoiced == self.pause_frames:  # maybe the end: let a final start early
                        self._route(c, cursor - pos0, fend - pos0, cursor)
                        cursor = fend
                        self.observer.on_next(SpeechPaused(t=last_voiced_end / rate))
                    if self.turn is not None and unvoiced in (self.ask_frames, self.second_frames):
                        self.asking = True  # the short silence, or the pause goes on: ask
        self.hist, self.unvoiced, self.last_voiced_end = hist, unvoiced, last_voiced_end
        self.asking = self.asking and speaking and unvoiced >= self.ask_frames
        mv.release()
        self.carry = data[len(data) - len(data) % fbytes :]
        self._route(c, cursor - pos0, n, cursor)

    def _start(self, fend: int) -> None:
        first = fend - self.hist.bit_length() * self.flen
        self.observer.on_next(SpeechStarted(t=first / self.rate))
        if self.turn_end is not None:
            self.turn_end.clear()
        if self.audio:
            begin = max(first - self.preroll, self.kept_end - min(self.kept_len, self.size))
            self._emit(self._kept_tail(fend - begin), begin)
        self.speaking, self.unvoiced, self.last_voiced_end = True, 0, fend

    def _end(self, fend: int) -> None:
        self.observer.on_next(SpeechEnded(t=self.last_voiced_end / self.rate))
        self.speaking, self.hist = False, 0
        self._forget(fend)
        if self.pending is not None:
            self._apply()
        if self.pending_turn is not None:
            self._apply_turn()
        if self.turn_end is not None:
            self.turn_end.clear()

    def _route(self, c: AudioChunk, a: int, b: int, pos: int) -> None:
        """Samples [a:b) of chunk c (starting at stream position ``pos``): emitted in speech, else
        kept for pre-roll (a reference, no copy: the chunk's PCM16 bytes when it has them)."""
        if b <= a or not self.audio:
            return
        if self.speaking:
            self._emit(c.samples[a:b], pos)
            return
        n = b - a
        if type(c) is Pcm16Chunk:
            piece: bytes | Samples = c.pcm if 2 * n == len(c.pcm) else c.pcm[2 * a : 2 * b]
        else:
            piece = c.samples[a:b]
        kept = self.kept
        kept.append((n, piece))
        self.kept_len += n
        self.kept_end = pos + n
        while self.kept_len - kept[0][0] >= self.size:
            self.kept_len -= kept.popleft()[0]

    def _forget(self, pos: int) -> None:
        self.kept.clear()
        self.kept_len, self.kept_end = 0, pos

    def _kept_tail(self, n: int) -> Samples:
        """The last n kept samples as float32 (n ≤ what is kept)."""
        parts: list[Samples] = []
        for m, piece in reversed(self.kept):
            parts.append(pcm16_to_float(piece) if isinstance(piece, bytes) else piece)
            n -= m
            if n <= 0:
                break
        if not parts:
            return np.zeros(0, np.float32)
        out = np.concatenate(parts[::-1])
        return out[-n:] if n < 0 else out

    def _emit(self, samples: Samples, pos: int) -> None:
        if len(samples):
            if self.turn is not None and self.turn_end is not None:
                self.turn_end.add(samples)
            self.observer.on_next(AudioChunk(samples, self.rate, pos / self.rate, self.seq))
            self.seq += 1
