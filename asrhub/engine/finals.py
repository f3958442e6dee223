"""A ``transcript.final`` is built here and only here: by every engine stage (batch, remote
streaming, Vosk) and for a whole file (the in-process API, ``POST /v1/transcribe``, gRPC's
long-running recognize), so every engine and every entry point gives the same fields:

* ``text`` without the engine's leading and trailing spaces;
* ``language``: the one the engine reports, else the session's (or request's) fixed language;
* ``language_probability``: kept when the engine identified the language;
* ``words`` (when the session wants them): the engine's times — relative to the audio it was
  given — shifted into stream (or file) time by :meth:`~asrhub.frames.Word.shifted` (to the
  millisecond), probabilities to 3 decimals.

A file's transcript is one final per timed piece (:func:`file_finals`), numbered from 1 like a
session's utterances, each with the words whose middle falls in it (:func:`words_in`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from asrhub.frames import FinalTranscript, Word
from asrhub.plugin import TimedText, Transcription


def final_event(
    segment_id: int,
    result: Transcription,
    *,
    provider: str,
    start: float,
    end: float,
    offset: float = 0.0,
    words: bool = True,
    language: str | None = None,
    speaker: int | None = None,
    route: Mapping[str, Any] | None = None,
) -> FinalTranscript:
    """The final of utterance ``segment_id`` (stream time ``start``–``end``) from the engine's
    ``result``, whose word times are ``offset`` seconds before stream time; ``words``: the
    session's ``word_timestamps``; ``language``: its fixed language (None: detect); ``route``:
    why its engine was chosen (a ``provider: "auto"`` session)."""
    shown = None
    if words and result.words is not None:
        shown = tuple(_final_word(w.shifted(offset)) for w in result.words)
    return FinalTranscript(
        segment_id=segment_id,
        text=result.text.strip(),
        start=start,
        end=end,
        provider=provider,
        language=result.language or language,
        words=shown,
        language_probability=result.language_probability,
        speaker=speaker,
        route=dict(route) if route is not None else None,
    )


def _final_word(word: Word) -> Word:
    return replace(word, probability=round(word.probability, 3))


def words_in(words: tuple[Word, ...] | None, start: float, end: float) -> tuple[Word, ...] | None:
    """The words whose middle falls in [start, end] (10 ms of slack): one rule for every caller
    that hands words out to timed pieces."""
    if words is None:
        return None
    return tuple(w for w in words if start - 0.01 <= (w.start + w.end) / 2 <= end + 0.01)


def pieces(result: Transcription, duration: float) -> tuple[TimedText, ...]:
    """A file's timed pieces (one covering the whole file when the engine gave none)."""
    if result.segments:
        return result.segments
    if not result.text.strip():
        return ()
    return (TimedText(text=result.text, start=0.0, end=duration),)


def file_finals(
    provider: str, result: Transcription, duration: float, language: str | None = None
) -> list[FinalTranscript]:
    """A whole file's transcription (times from the file's start) as ``transcript.final``
    events, one per timed piece, ids from 1; ``language``: the one the request named."""
    return [
        final_event(
            i,
            Transcription(
                piece.text,
                result.language,
                words_in(result.words, piece.start, piece.end),
                language_probability=result.language_probability,
            ),
            provider=provider,
            start=round(piece.start, 3),
            end=round(piece.end, 3),
            language=language,
            speaker=piece.speaker,
        )
        for i, piece in enumerate(pieces(result, duration), start=1)
    ]
