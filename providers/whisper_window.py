"""Whisper's encoder on a window the clip's length instead of 30 s.

faster-whisper pads every clip's mel frames to 3000 (30 s), as Whisper was trained, so the
encoder costs the same for a 2 s partial as for 30 s of speech: ~80 % of a tiny.en partial decode
on a CPU (docs/inference.md). CTranslate2's Whisper encoder also takes a shorter input (what
whisper.cpp calls ``audio_ctx``). :func:`pipeline` is faster-whisper's own
``BatchedInferencePipeline`` (its prompt, tokenizer, language identification, word alignment
and hallucination statistics) with the padded features cut to :func:`window_frames` before its
``forward``: the longest clip's frames plus at least :data:`MARGIN_FRAMES` of padding, in whole
seconds, never under :data:`MIN_FRAMES`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

HOP = 160
"""Samples per mel frame (10 ms at 16 kHz)."""
FULL_FRAMES = 3000
MARGIN_FRAMES = 100
"""At least 1 s of padding after the clip's frames (the model was trained with speech followed
by padding)."""
MIN_FRAMES = 500
STEP_FRAMES = 100


def window_frames(samples: int) -> int:
    """The encoder window for clips of at most ``samples``: their frames plus the margin, in
    whole seconds, between :data:`MIN_FRAMES` and the full 30 s."""
    frames = math.ceil(samples / HOP) + MARGIN_FRAMES
    return min(FULL_FRAMES, max(MIN_FRAMES, math.ceil(frames / STEP_FRAMES) * STEP_FRAMES))


def pipeline(model: Any, frames: int) -> Any:
    """faster-whisper's ``BatchedInferencePipeline`` over ``model`` whose encoder reads ``frames``
    mel frames per clip (faster-whisper is imported on first use)."""
    return _pipeline_class()(model, frames)


@functools.cache
def _pipeline_class() -> type:
    from faster_whisper import BatchedInferencePipeline

    class WindowedPipeline(BatchedInferencePipeline):  # type: ignore[misc]
        def __init__(self, model: Any, frames: int) -> None:
            super().__init__(model)
            self.frames = frames

        def forward(self, features: Any, tokenizer: Any, chunks_metadata: Any, options: Any) -> Any:
            return super().forward(features[..., : self.frames], tokenizer, chunks_metadata, options)

    return WindowedPipeline
