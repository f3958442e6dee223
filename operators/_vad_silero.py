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

import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrhub.errors import HubError
from asrhub.logging import get_logger

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
END_FRAMES = 4
"""20 ms frames of silence the gate adds to ``silence_ms`` with Silero: webrtcvad's own hangover
at the default aggressiveness (80 ms), which webrtc's gate has on top of ``silence_ms``."""

log = get_logger("asrhub.vad")


def model_path() -> Path:
    base = os.environ.get("ASRHUB_MODEL_DIR") or str(Path.home() / ".cache" / "asrhub")
    return Path(base) / "pipecat" / MODEL_FILE


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
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                session = ort.InferenceSession(
                    str(path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                self._model = SileroModel(session)
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
        self.rate = 0
        self.state: Floats = np.zeros(STATE_SHAPE, np.float32)
        self.context: Floats = np.zeros(0, np.float32)
        self.pending: Floats = np.zeros(0, np.float32)
        self.expected = -1  # stream position after the samples seen so far
        self.speech = False  # the last window's decision (with hysteresis)
        self.marks: deque[tuple[int, bool]] = deque()  # (end position, speech) of windows not yet read
        self.frame_end = 0
        self.voiced = False  # what the frames read now

    def judge(self, pcm: bytes, pos: int, first: int, rate: int) -> Callable[[memoryview, int], int]:
        """Score the windows the chunk's PCM16 ``pcm`` (at stream position ``pos``) completes;
        returns the per-frame call for its frames (the first starts at ``first``)."""
        if rate != self.rate:
            if rate not in (8_000, 16_000, 32_000, 48_000):
                raise ValueError(f"Silero VAD needs 8/16/32/48 kHz audio, got {rate} Hz")
            self.rate, self.expected = rate, -1
            self.state = np.zeros(STATE_SHAPE, np.float32)
        if pos != self.expected:  # first chunk or a gap: windows restart here
            self.pending, self.marks = np.zeros(0, np.float32), deque()
            self.context = np.zeros(0, np.float32)
        samples = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
        self.expected = pos + len(samples)
        self._score(np.concatenate((self.pending, samples)) if len(self.pending) else samples, self.expected)
        self.frame_end = first
        return self._frame

    def _score(self, samples: Floats, end: int) -> None:
        model_rate = 8_000 if self.rate == 8_000 else 16_000
        step = self.rate // model_rate
        window, ctx = WINDOW[model_rate], CONTEXT[model_rate]
        span = window * step
        count = len(samples) // span
        start = end - len(samples)
        if len(self.context) != ctx:
            self.context = np.zeros(ctx, np.float32)
        for i in range(count):
            new = samples[i * span : (i + 1) * span : step]
            x = np.concatenate((self.context, new))[None, :]
            probability, self.state = self.model.run(x, self.state, model_rate)
            self.context = new[-ctx:]
            self.speech = bool(probability[0] >= (self.negative if self.speech else self.threshold))
            self.marks.append((start + (i + 1) * span, self.speech))
        self.pending = samples[count * span :].copy()

    def _frame(self, frame: memoryview, n: int) -> int:
        self.frame_end += n
        marks = self.marks
        while marks and marks[0][0] <= self.frame_end:
            self.voiced = marks.popleft()[1]
        return self.voiced
