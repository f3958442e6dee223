"""The hub's transcript events → Google Cloud Speech v1 results.

* ``transcript.final`` → a result with ``is_final=true``, one alternative (its text; the mean
  word probability as ``confidence`` when the engine gave words; the words with
  ``start_time``/``end_time`` when ``enable_word_time_offsets`` was asked), ``result_end_time``
  = the utterance's end in stream time (from the first audio byte), ``language_code``, and
  with ``multichannel`` its ``channel_tag`` (the 0-based ``channel`` + 1, Google's 1…N).
* ``transcript.partial`` → ``is_final=false`` with a ``stability``: the share of the guess's
  words that will not change — its ``stable`` words (two decodes agreed on them, and the hub
  never rewrites them: :mod:`asrhub.engine.local_agreement`) — between 0.01 and 0.9, Google's
  own range. For an engine whose partials carry no ``stable`` part (streaming engines), the
  share of words that repeat the previous partial's first words, the same estimate made here.
  A first guess has 0.01.
"""

from __future__ import annotations

import re
from datetime import timedelta

from google.cloud import speech_v1

from asrhub.frames import FinalTranscript, PartialTranscript, Word

MIN_STABILITY, MAX_STABILITY = 0.01, 0.9
_PUNCT = re.compile(r"[^\w']+")


def normalized_words(text: str) -> list[str]:
    """Lower-case words without punctuation, for comparing two guesses."""
    return [w for w in (_PUNCT.sub("", t).lower() for t in text.split()) if w]


def _duration(seconds: float) -> timedelta:
    return timedelta(seconds=max(0.0, seconds))


class Stability:
    """Per-utterance memory of the previous partial (dropped when the utterance is final)."""

    def __init__(self) -> None:
        self._previous: dict[int | None, tuple[int, list[str]]] = {}
        """Per channel (None: a single-channel session): its utterance in progress and words."""

    def of(self, partial: PartialTranscript) -> float:
        if partial.stable is not None:
            total = len(partial.text.split())
            share = len(partial.stable.split()) / total if total else 0.0
            return min(MAX_STABILITY, max(MIN_STABILITY, share))
        words = normalized_words(partial.text)
        segment_id, previous = self._previous.get(partial.channel, (None, None))
        if segment_id != partial.segment_id:
            previous = None
        self._previous[partial.channel] = (partial.segment_id, words)  # only the utterance in progress
        if not previous or not words:
            return MIN_STABILITY
        agreed = 0
        for a, b in zip(previous, words, strict=False):
            if a != b:
                break
            agreed += 1
        return min(MAX_STABILITY, max(MIN_STABILITY, agreed / len(words)))

    def forget(self, segment_id: int, channel: int | None = None) -> None:
        if self._previous.get(channel, (None,))[0] == segment_id:
            del self._previous[channel]


def _words(words: tuple[Word, ...] | None) -> list[speech_v1.WordInfo]:
    return [
        speech_v1.WordInfo(
            word=w.word.strip(),
            start_time=_duration(w.start),
            end_time=_duration(w.end),
            confidence=w.probability,
            speaker_tag=0 if w.speaker is None else w.speaker + 1,
        )
        for w in words or ()
        if w.word.strip()
    ]


def all_words_result(
    finals: list[FinalTranscript], *, language_code: str
) -> speech_v1.SpeechRecognitionResult:
    """With diarization, Google's v1 answer ends with one more result whose alternative holds
    every word so far with its ``speaker_tag`` (1, 2, …)."""
    words = tuple(w for f in finals for w in f.words or ())
    end = finals[-1].end if finals else 0.0
    return speech_v1.SpeechRecognitionResult(
        alternatives=[speech_v1.SpeechRecognitionAlternative(transcript="", words=_words(words))],
        result_end_time=_duration(end),
        language_code=language_code,
    )


def final_alternative(
    final: FinalTranscript, *, word_offsets: bool
) -> speech_v1.SpeechRecognitionAlternative:
    words = final.words or ()
    confidence = sum(w.probability for w in words) / len(words) if words else 0.0
    return speech_v1.SpeechRecognitionAlternative(
        transcript=final.text.strip(),
        confidence=confidence,
        words=_words(words) if word_offsets else [],
    )


def streaming_final(
    final: FinalTranscript, *, word_offsets: bool, language_code: str
) -> speech_v1.StreamingRecognizeResponse:
    result = speech_v1.StreamingRecognitionResult(
        alternatives=[final_alternative(final, word_offsets=word_offsets)],
        is_final=True,
        stability=0.0,
        result_end_time=_duration(final.end),
        language_code=final.language or language_code,
        channel_tag=_tag(final.channel),
    )
    return speech_v1.StreamingRecognizeResponse(results=[result])


def streaming_partial(
    partial: PartialTranscript, stability: float, *, language_code: str
) -> speech_v1.StreamingRecognizeResponse:
    result = speech_v1.StreamingRecognitionResult(
        alternatives=[speech_v1.SpeechRecognitionAlternative(transcript=partial.text.strip())],
        is_final=False,
        stability=stability,
        result_end_time=_duration(partial.end),
        language_code=language_code,
        channel_tag=_tag(partial.channel),
    )
    return speech_v1.StreamingRecognizeResponse(results=[result])


def speech_event(kind: int, t: float) -> speech_v1.StreamingRecognizeResponse:
    return speech_v1.StreamingRecognizeResponse(speech_event_type=kind, speech_event_time=_duration(t))


def recognize_result(
    final: FinalTranscript, *, word_offsets: bool, language_code: str
) -> speech_v1.SpeechRecognitionResult:
    return speech_v1.SpeechRecognitionResult(
        alternatives=[final_alternative(final, word_offsets=word_offsets)],
        result_end_time=_duration(final.end),
        language_code=final.language or language_code,
        channel_tag=_tag(final.channel),
    )


def _tag(channel: int | None) -> int:
    """Google's ``channel_tag``: 1…N with separate recognition per channel, else 0 (unset)."""
    return 0 if channel is None else channel + 1
