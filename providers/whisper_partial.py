"""Partial decodes on an encoder window the length of the clip, not 30 s.

faster-whisper pads every clip's mel frames to 3000 (30 s), as Whisper was trained, so the
encoder costs the same for a 2 s partial as for 30 s of speech: ~80 % of a tiny.en partial
decode on a CPU (docs/benchmarks.md). CTranslate2's Whisper encoder takes a shorter input (the
``audio_ctx`` of whisper.cpp): the clip's frames plus at least :data:`MARGIN_FRAMES` of padding,
rounded up to whole seconds, never under :data:`MIN_FRAMES`. A partial is shown for a moment and
replaced by the final, which keeps the full 30 s window (its words, timings and WER are the
model's own), so a partial is decoded here: greedy (``partial_beam_size``), no timestamps,
through CTranslate2's ``generate`` with faster-whisper's prompt and tokenizer. The same
hallucination filter as the 30 s path drops a chunk the model heard as noise.

Used only where the language is known (given, or an English-only model): identifying a
language needs the full window (:meth:`~.whisper_decode.WhisperDecoder.decode_batch` does it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asrhub.frames import TARGET_RATE, Samples
from asrhub.plugin import TimedText, Transcription

HOP = 160
"""Samples per mel frame (10 ms)."""
FULL_FRAMES = 3000
MARGIN_FRAMES = 100
"""At least 1 s of padding after the clip's frames (the model was trained with speech followed
by padding; a window that ends with the speech loses the last word now and then)."""
MIN_FRAMES = 500
STEP_FRAMES = 100


def window_frames(samples: int) -> int:
    """The encoder window for a clip of ``samples``: its frames plus the margin, in whole
    seconds, between :data:`MIN_FRAMES` and the full 30 s."""
    frames = math.ceil(samples / HOP) + MARGIN_FRAMES
    return min(FULL_FRAMES, max(MIN_FRAMES, math.ceil(frames / STEP_FRAMES) * STEP_FRAMES))


def decode_partials(
    model: Any,
    clips: list[Samples],
    language: str,
    prompt: str | None,
    *,
    beam_size: int,
    task: str = "transcribe",
    hotwords: str | None = None,
) -> list[tuple[str, TimedText | None]]:
    """``(text, its segment)`` of each clip (each ≤ 30 s), decoded in one call on a window that
    fits the longest; ``model`` is a faster-whisper ``WhisperModel``."""
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio

    width = window_frames(max(len(c) for c in clips))
    features = np.zeros((len(clips), model.feature_extractor.mel_filters.shape[0], width), np.float32)
    for i, clip in enumerate(clips):
        mel = model.feature_extractor(np.ascontiguousarray(clip, dtype=np.float32))[:, :width]
        features[i, : mel.shape[0], : mel.shape[1]] = mel
    tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task=task, language=language)
    previous = tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
    tokens = model.get_prompt(tokenizer, previous, without_timestamps=True, hotwords=hotwords)
    encoded = model.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True)
    results = model.model.generate(
        encoded,
        [list(tokens) for _ in clips],
        beam_size=beam_size,
        max_length=model.max_length,
        suppress_blank=True,
        suppress_tokens=[-1],
        return_scores=True,
        return_no_speech_prob=True,
    )
    out: list[tuple[str, TimedText | None]] = []
    for clip, result in zip(clips, results, strict=True):
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        text = tokenizer.decode(ids).strip()
        if not text:
            out.append(("", None))
            continue
        avg_logprob = float(result.scores[0]) * len(ids) / (len(ids) + 1)  # length_penalty 1
        segment = TimedText(
            text,
            0.0,
            len(clip) / TARGET_RATE,
            avg_logprob,
            float(result.no_speech_prob),
            float(get_compression_ratio(text)),
        )
        out.append((text, segment))
    return out


def as_transcription(text: str, segment: TimedText | None, language: str, duration: float) -> Transcription:
    return Transcription(
        text=text, language=language, words=None, segments=(segment,) if segment else (), duration=duration
    )
