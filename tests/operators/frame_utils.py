"""Shared helpers for operator tests: comparable summaries of frames, synchronous runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import reactivex

from asrhub.frames import AudioChunk, Frame, Segment
from asrhub.plugin import Operator


def summary(frame: Frame) -> Any:
    """A frame as something ``==`` can compare (numpy arrays cannot be compared by dataclass eq)."""
    if isinstance(frame, AudioChunk):  # start in samples
        return (
            "chunk",
            frame.sample_rate,
            round(frame.start * frame.sample_rate),
            len(frame.samples),
            frame.seq,
        )
    if isinstance(frame, Segment):  # start/end in samples
        rate = frame.sample_rate
        return (
            "seg",
            frame.segment_id,
            round(frame.start * rate),
            round(frame.end * rate),
            frame.final,
            len(frame.samples),
        )
    return frame


def run(op: Operator, frames: Iterable[Frame]) -> tuple[list[Frame], bool]:
    """Push ``frames`` through ``op`` synchronously; returns (outputs, completed). Errors propagate."""
    out: list[Frame] = []
    done: list[bool] = []
    errors: list[Exception] = []
    reactivex.from_iterable(list(frames)).pipe(op).subscribe(
        out.append, errors.append, lambda: done.append(True)
    )
    if errors:
        raise errors[0]
    return out, bool(done)


def audio(frames: Iterable[Frame]) -> np.ndarray:
    """All AudioChunk samples concatenated."""
    parts = [f.samples for f in frames if isinstance(f, AudioChunk)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def chunks_of(x: np.ndarray, rate: int, size: int) -> list[AudioChunk]:
    """Cut ``x`` into AudioChunks of ``size`` samples with stream times from the sample count."""
    return [AudioChunk(x[i : i + size], rate, i / rate, k) for k, i in enumerate(range(0, len(x), size))]
