"""The faster-whisper decode path, shared by the in-process engine and the Ray replicas.

:class:`WhisperDecoder` wraps one loaded ``WhisperModel``:

* ``decode_batch(clips, …)`` decodes several utterances (≤ 30 s each, usually from different
  sessions) in **one** call of faster-whisper's ``BatchedInferencePipeline``: the clips are laid
  end to end in one array, each starting on a whole second, and passed as ``clip_timestamps``
  with ``batch_size = len(clips)``, so the encoder and CTranslate2's ``generate`` each run once
  on the whole batch. Each output segment carries the ``seek`` of its clip, which routes it back;
  times are made relative to the clip's own start again.
* ``decode(samples, …)`` is the one-clip case, and the path for audio longer than 30 s (a file):
  faster-whisper's bundled Silero VAD cuts it into ≤ 30 s chunks, decoded in batches.

Both use ``without_timestamps=True`` plus word timestamps from the cross-attention alignment and
drop hallucinated chunks (see the whisper provider's docstring for why). ``task``
(``translate``) and ``hotwords`` (a session's key terms) apply to the whole call; with no
language given, the call identifies it and the result carries ``language_probability``;
``detect_among`` picks the most probable of a list of languages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from asrhub.frames import TARGET_RATE, Samples, Word
from asrhub.plugin import TimedText, Transcription

from .whisper_window import FULL_FRAMES, pipeline, window_frames

CHUNK_S = 30.0
MIN_S = 0.1


class WhisperDecoder:
    def __init__(self, model: Any, settings: Any) -> None:
        self.model, self.settings = model, settings

    def decode(
        self, samples: Samples, language: str | None, prompt: str | None, *, final: bool, **options: Any
    ) -> Transcription:
        duration = len(samples) / TARGET_RATE
        if duration <= CHUNK_S:
            return self.decode_batch([samples], language, prompt, final=final, **options)[0]
        segments, info = self._pipeline(
            np.ascontiguousarray(samples, dtype=np.float32),
            language,
            prompt,
            final,
            vad_filter=True,
            batch_size=self.settings.batch_size,
            **options,
        )
        result = self._transcription(list(segments), info.language, duration, 0.0, final)
        return self._identified(result, language, info)

    def detect_among(self, samples: Samples, allowed: Sequence[str]) -> tuple[str, float]:
        """The most probable of ``allowed`` languages in (the first 30 s of) ``samples``, and its
        probability as the model gives it (not renormalised over the allowed ones)."""
        _, _, ranked = self.model.detect_language(samples[: int(CHUNK_S * TARGET_RATE)])
        probs = dict(ranked)
        best = max(allowed, key=lambda code: probs.get(code, 0.0))
        return best, float(probs.get(best, 0.0))

    def decode_batch(
        self, clips: list[Samples], language: str | None, prompt: str | None, *, final: bool, **options: Any
    ) -> list[Transcription]:
        """One engine call for every clip (each ≤ 30 s); one Transcription per clip, in order."""
        durations = [len(c) / TARGET_RATE for c in clips]
        if any(d > CHUNK_S for d in durations):
            raise ValueError("decode_batch takes clips of at most 30 s; use decode for longer audio")
        results: list[Transcription | None] = [
            Transcription("", language, () if final else None, (), d) if d < MIN_S else None
            for d in durations
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        if not todo:
            return [r for r in results if r is not None]
        offsets: dict[int, int] = {}  # whole seconds, so every seek below is exact
        at = 0
        for i in todo:
            offsets[i] = at
            at += math.ceil(durations[i]) + 1
        audio = np.zeros(at * TARGET_RATE, dtype=np.float32)
        for i in todo:
            start = offsets[i] * TARGET_RATE
            audio[start : start + len(clips[i])] = clips[i]
        stamps = [{"start": float(offsets[i]), "end": offsets[i] + durations[i]} for i in todo]
        window = self.settings.final_window if final else self.settings.partial_window
        frames = window_frames(max(len(clips[i]) for i in todo)) if window == "clip" else FULL_FRAMES
        segments, info = self._pipeline(
            audio,
            language,
            prompt,
            final,
            clip_timestamps=stamps,
            batch_size=len(todo),
            frames=frames,
            **options,
        )
        fps = self.model.frames_per_second
        by_seek: dict[int, list[Any]] = {}
        for s in segments:
            by_seek.setdefault(int(s.seek), []).append(s)
        for i in todo:
            mine = by_seek.get(int(offsets[i] * fps), [])
            result = self._transcription(mine, info.language, durations[i], float(offsets[i]), final)
            results[i] = self._identified(result, language, info) if len(todo) == 1 else result
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ helpers

    def _identified(self, result: Transcription, language: str | None, info: Any) -> Transcription:
        """With the language identified by the call (none was given), say how sure it was."""
        if language is not None or not self.model.model.is_multilingual:
            return result
        return dataclasses.replace(result, language_probability=round(float(info.language_probability), 4))

    def _pipeline(
        self,
        audio: Samples,
        language: str | None,
        prompt: str | None,
        final: bool,
        task: str = "transcribe",
        hotwords: str | None = None,
        frames: int = FULL_FRAMES,
        **layout: Any,
    ) -> tuple[Any, Any]:
        s = self.settings
        return pipeline(self.model, frames).transcribe(  # type: ignore[no-any-return]
            audio,
            language=language,
            task=task,
            hotwords=hotwords,
            beam_size=s.beam_size if final else s.partial_beam_size,
            without_timestamps=True,
            word_timestamps=final,
            initial_prompt=prompt or None,
            **layout,
        )

    def _transcription(
        self, segments: list[Any], language: str | None, duration: float, offset: float, final: bool
    ) -> Transcription:
        kept = [s for s in segments if not self.hallucinated(s)]
        words = tuple(
            Word(w.word.strip(), float(w.start) - offset, float(w.end) - offset, float(w.probability))
            for s in kept
            for w in s.words or ()
            if w.word.strip()
        )
        return Transcription(
            text=" ".join(s.text.strip() for s in kept if s.text.strip()),
            language=language,
            words=words if final else None,
            segments=tuple(
                TimedText(
                    s.text.strip(),
                    float(s.start) - offset,
                    float(s.end) - offset,
                    float(s.avg_logprob),
                    float(s.no_speech_prob),
                    float(s.compression_ratio),
                )
                for s in kept
            ),
            duration=duration,
        )

    def hallucinated(self, segment: Any) -> bool:
        s = self.settings
        return bool(
            (segment.no_speech_prob > s.no_speech_threshold and segment.avg_logprob < s.log_prob_threshold)
            or segment.compression_ratio > s.compression_ratio_threshold
        )
