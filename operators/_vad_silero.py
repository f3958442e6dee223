"""Silero VAD v5 (ONNX) as the ``vad_gate`` classifier: a speech probability per 32 ms window.

The model (``silero_vad.onnx``, MIT) comes from the ``pipecat-ai==1.14.0`` wheel, unpacked
(hash-checked, never installed) by ``bash scripts/setup.sh`` into
``${ASRHUB_MODEL_DIR:-~/.cache/asrhub}/pipecat/``. Its inputs: ``input`` [B, 64 + 512] (the last
64 samples of the previous window, then 512 new ones, float in ±1, at 16 kHz; at 8 kHz 32 + 256),
``state`` [2, B, 128] (the RNN state a call returns for the next), ``sr``. One ONNX Runtime
session (one intra-op thread) is loaded once per owner (:class:`SileroVad`, one per hub) and
shared by every session; ``run`` is thread-safe. Per session: the state, the context and the
samples of an unfinished window (under 3 kB).

Windows to frames: the gate judges 20 ms frames; a frame is voiced when the last window that
ended at or before the frame's end was speech. A window is speech when its probability is at
least ``threshold``, or, after a speech window, at least ``threshold − 0.15`` (the hysteresis
Silero's own iterator uses). 32 and 48 kHz audio is read at 16 kHz (every 2nd / 3rd sample).

Silero has no hangover of its own (webrtcvad adds 80–100 ms after any voiced frame), so the
gate counts :data:`END_FRAMES` more unvoiced frames before an utterance ends: ``silence_ms`` means
the same wall-clock silence with either engine (docs/benchmarks.md, "VAD engines").
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.models import model_dir, onnx_session

Floats = npt.NDArray[np.float32]

MODEL_FILE = "silero_vad.onnx"
SETUP_HINT = "run `bash scripts/setup.sh` to fetch the Silero VAD model (from the pipecat-ai wheel)"
WINDOW = {16_000: 512, 8_000: 256}
"""New samples per model call, per model rate (32 ms)."""
CONTEXT = {16_000: 64, 8_000: 32}
"""Samples of the previous window the model reads again."""
STATE_SHAPE = (2, 1, 128)
NEG_OFFSET = 0.15
"""Hysteresis: speech goes on while the probability stays above threshold − this."""
GATHER_S = 0.01
"""A flight waits this long after the first chunk for other sessions' chunks (at real-time pace
sessions' chunks arrive spread out; a flight that takes off at once carries one or two)."""
MAX_BATCH = 128
"""Rows of one batched model call (~7 ms): bounds how long one call holds the event loop."""
END_FRAMES = 4
"""20 ms frames of silence the gate adds to ``silence_ms`` with Silero: webrtcvad's own hangover
at the default aggressiveness (80 ms), which webrtc's gate has on top of ``silence_ms``."""

log = get_logger("asrhub.vad")


def model_path() -> Path:
    return model_dir("pipecat") / MODEL_FILE


class SileroModel:
    """The shared ONNX Runtime session."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._rates = {rate: np.array(rate, dtype=np.int64) for rate in WINDOW}

    def run(self, x: Floats, state: Floats, rate: int) -> tuple[Floats, Floats]:
        """x [B, context + window], state [2, B, 128] → (probabilities [B], the next state)."""
        out, new_state = self.session.run(None, {"input": x, "state": state, "sr": self._rates[rate]})
        return np.asarray(out, np.float32).reshape(-1), np.asarray(new_state, np.float32)


class SileroVad:
    """The Silero model of one owner (a hub): loaded once (at start-up, or by the first session
    that asks for it), then shared. ``path``: the model file (default: :func:`model_path`)."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._model: SileroModel | None = None
        self._batcher: SileroBatcher | None = None

    def batcher(self) -> SileroBatcher:
        """The owner's batcher over its model (loads the model if needed)."""
        if self._batcher is None:
            self._batcher = SileroBatcher(self.model())
        return self._batcher

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def model(self) -> SileroModel:
        """The model, loaded on first use (blocking, ~50 ms). Raises :class:`HubError`
        (``provider_failed``, fatal) naming the missing file and the set-up step."""
        with self._lock:
            if self._model is None:
                path = self._path or model_path()
                if not path.is_file():
                    message = f"missing Silero VAD model {path}; {SETUP_HINT}"
                    raise HubError("provider_failed", message, fatal=True)
                self._model = SileroModel(onnx_session(path))
                log.info("Silero VAD model loaded", file=str(path))
            return self._model

    def load(self) -> None:
        self.model()


class SileroClassifier:
    """One session's Silero state over the shared model."""

    hangover_frames = 0
    """Silero keeps no hangover: a voiced frame is speech heard in its window."""
    end_frames = END_FRAMES

    def __init__(self, model: SileroModel, threshold: float) -> None:
        self.model, self.threshold = model, threshold
        self.negative = max(threshold - NEG_OFFSET, 0.01)
        self.rate = self.model_rate = 0
        self.state: Floats = np.zeros(STATE_SHAPE, np.float32)
        self.context: Floats = np.zeros(0, np.float32)
        self.pending: Floats = np.zeros(0, np.float32)
        self.expected = -1  # stream position after the samples added so far
        self.todo: list[tuple[Floats, int]] = []  # windows added, not yet scored: (input row, end)
        self.probabilities: list[float] = []  # scores of ``todo`` so far (a batch fills them)
        self.speech = False  # the last window's decision (with hysteresis)
        self.marks: deque[tuple[int, bool]] = deque()  # (end position, speech) of windows not yet read
        self.frame_end = 0
        self.voiced = False  # what the frames read now
        self.scored = -1  # stream position up to which a flight scored the windows

    def judge(self, pcm: bytes, pos: int, first: int, rate: int) -> Callable[[memoryview, int], int]:
        """Score the windows the chunk's PCM16 ``pcm`` (at stream position ``pos``) completes,
        unless a batch did; returns the per-frame call for its frames (the first starts at
        ``first``)."""
        end = pos + len(pcm) // 2
        if rate != self.rate or end > self.expected:
            self.add(pcm, pos, rate)
        if self.todo and self.todo[0][1] <= end:
            self.score(sum(1 for _, e in self.todo if e <= end))
        self.frame_end = first
        return self._frame

    def add(self, pcm: bytes, pos: int, rate: int) -> None:
        """Cut the windows this audio completes (scored later: :meth:`score` or a batch)."""
        if rate != self.rate:
            if rate not in (8_000, 16_000, 32_000, 48_000):
                raise ValueError(f"Silero VAD needs 8/16/32/48 kHz audio, got {rate} Hz")
            self.rate, self.expected, self.model_rate = rate, -1, 8_000 if rate == 8_000 else 16_000
            self.state = np.zeros(STATE_SHAPE, np.float32)
            self.marks.clear()
        samples = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
        if pos != self.expected:  # first chunk or a gap: windows restart here
            self.pending = np.zeros(0, np.float32)
            self.context = np.zeros(CONTEXT[self.model_rate], np.float32)
        self.expected = pos + len(samples)
        if len(self.pending):
            samples = np.concatenate((self.pending, samples))
        step = self.rate // self.model_rate
        window, ctx = WINDOW[self.model_rate], CONTEXT[self.model_rate]
        span = window * step
        count = len(samples) // span
        if count:  # all of the chunk's windows in one array: each row is context + window
            new = samples[: count * span : step].reshape(count, window)
            rows = np.empty((count, ctx + window), np.float32)
            rows[:, ctx:] = new
            rows[0, :ctx] = self.context
            rows[1:, :ctx] = new[:-1, -ctx:]
            self.context = new[-1, -ctx:].copy()
            start = self.expected - len(samples)
            self.todo.extend((rows[i], start + (i + 1) * span) for i in range(count))
        self.pending = samples[count * span :].copy()

    def score(self, count: int) -> None:
        """Score the first ``count`` windows left to do, one model call each (no batch)."""
        for x, _ in self.todo[len(self.probabilities) : count]:
            probability, self.state = self.model.run(x[None, :], self.state, self.model_rate)
            self.probabilities.append(float(probability[0]))
        self.finish(count)

    def finish(self, count: int) -> None:
        """Turn the first ``count`` scored windows into speech decisions (hysteresis) at their
        end positions."""
        speech, marks = self.speech, self.marks
        for (_, end), probability in zip(self.todo[:count], self.probabilities[:count], strict=True):
            speech = probability >= (self.negative if speech else self.threshold)
            marks.append((end, speech))
        self.speech = speech
        del self.todo[:count], self.probabilities[:count]

    def _frame(self, frame: memoryview, n: int) -> int:
        self.frame_end += n
        marks = self.marks
        while marks and marks[0][0] <= self.frame_end:
            self.voiced = marks.popleft()[1]
        return self.voiced


Drain = Callable[[BaseException | None], None]


class SileroBatcher:
    """Scores the windows of many sessions in shared model calls, off the event loop.

    A session's Silero chunk is cut into windows on the loop (:meth:`SileroClassifier.add`) and
    waits, with every frame behind it, for a *flight*: one job in the loop's default executor,
    taking off :data:`GATHER_S` after the first chunk waits, that scores every window waiting
    when it took off — round r stacks the r-th window of each
    session into one call of at most :data:`MAX_BATCH` rows (a session's own windows stay in
    order: its RNN state goes from one to the next). When it lands (on the loop), each
    session's frames whose windows are scored go on; what arrived meanwhile takes off next.
    One flight at a time per batcher, so it holds one executor thread; ONNX Runtime releases
    the GIL, so the model runs beside the loop. Cost per window: 125 µs alone, 60 µs in a
    batch of 32 (docs/benchmarks.md, "VAD engines"). A flight holds references to the sessions
    it serves until it lands."""

    def __init__(self, model: SileroModel) -> None:
        self.model = model
        self.waiting: dict[SileroClassifier, Drain] = {}
        self.flying = False
        self.loop: Any = None
        self.batches = self.windows = 0  # model calls and windows scored (for the benchmark)

    @property
    def idle(self) -> bool:
        return not self.flying and not self.waiting

    def submit(self, classifier: SileroClassifier, drain: Drain, loop: Any) -> None:
        """Score ``classifier``'s windows in the next flight, then call ``drain``."""
        if loop is not self.loop:  # another loop (a test's, after the last one closed)
            self.loop, self.waiting, self.flying = loop, {}, False
        if self.idle:
            loop.call_later(GATHER_S, self._take_off)
        self.waiting[classifier] = drain

    def _take_off(self) -> None:
        if self.flying or not self.waiting:
            return
        flight, self.waiting = self.waiting, {}
        plan = [(c, len(c.todo), c.expected) for c in flight]
        self.flying = True
        loop = self.loop
        future = loop.run_in_executor(None, self.run, plan)
        future.add_done_callback(lambda done: self._land(loop, flight, plan, done))

    def _land(self, loop: Any, flight: dict[SileroClassifier, Drain], plan: list[Any], done: Any) -> None:
        if loop is not self.loop:
            return
        self.flying = False
        error = done.exception() if not done.cancelled() else RuntimeError("Silero VAD flight cancelled")
        for c, count, upto in plan:
            if error is None:
                c.finish(count)
                c.scored = upto
        for drain in flight.values():
            drain(error)
        if self.waiting:
            self._take_off()

    def run(self, plan: list[tuple[SileroClassifier, int, int]]) -> None:
        """Score the windows of ``plan`` (classifier, windows to score) in batched rounds."""
        rows = [(c, count) for c, count, _ in plan if count > len(c.probabilities)]
        while rows:
            for rate in {c.model_rate for c, _ in rows}:
                group = [c for c, _ in rows if c.model_rate == rate]
                for i in range(0, len(group), MAX_BATCH):
                    part = group[i : i + MAX_BATCH]
                    x = np.stack([c.todo[len(c.probabilities)][0] for c in part])
                    state = np.concatenate([c.state for c in part], axis=1)
                    probabilities, state = self.model.run(x, state, rate)
                    self.batches += 1
                    self.windows += len(part)
                    for j, (c, p) in enumerate(zip(part, probabilities.tolist(), strict=True)):
                        c.state = state[:, j : j + 1]
                        c.probabilities.append(p)
            rows = [(c, count) for c, count in rows if count > len(c.probabilities)]
