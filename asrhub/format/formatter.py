"""One session's (or request's) formatting, in a fixed order: punctuation, numerals,
redaction, profanity — redaction reads the digits numerals would show (so a card number said
in words is found either way), and the profanity filter never sees a marker."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

from asrhub.config import FormatConfig, base_language
from asrhub.frames import FinalTranscript, PartialTranscript, Word
from asrhub.plugin import Transcription

from .numerals import numerals
from .profanity import masked
from .punctuation import unpunctuated
from .redact import redacted
from .tokens import Piece, pieces_of

DEFAULT_LANGUAGE = "en"
"""Numbers are read in this language when neither the engine nor the request names one."""


def formatted_pieces(words: Sequence[Word], config: FormatConfig, language: str | None = None) -> list[Piece]:
    """``words`` formatted, each output word with the span of input words it replaced."""
    lang = base_language(language or DEFAULT_LANGUAGE)
    pieces = pieces_of(words)
    if not config.punctuate:
        pieces = unpunctuated(pieces)
    if config.numerals:
        pieces = numerals(pieces, lang)
    if config.redact:
        pieces = redacted(pieces, config.redact, lang)
    if config.profanity_filter:
        pieces = masked(pieces)
    return pieces


def format_words(
    words: Sequence[Word], config: FormatConfig, language: str | None = None
) -> tuple[Word, ...]:
    """``words`` formatted: each output word spans (start of the first, end of the last) the
    input words it replaced, with their lowest probability."""
    if not config.active or not words:
        return tuple(words)
    return tuple(p.word for p in formatted_pieces(words, config, language))


def format_with_stable(
    text: str, stable: int, config: FormatConfig, language: str | None = None
) -> tuple[str, str]:
    """A partial's ``text`` whose first ``stable`` words will not change, formatted as one:
    (the formatted text, its stable prefix). The prefix holds the formatted tokens that
    replaced stable words only; a token that also spans words not yet stable (a number still
    being said) joins it once all its words are — so the stable part is formatted exactly as
    the text is, and never rewritten."""
    if not config.active or not text.strip():
        return text, " ".join(text.split()[:stable])
    words = [Word(token, 0.0, 0.0, 1.0) for token in text.split()]
    pieces = formatted_pieces(words, config, language)
    prefix: list[str] = []
    for piece in pieces:
        if piece.hi > stable:
            break
        prefix.append(piece.word.word)
    return " ".join(p.word.word for p in pieces), " ".join(prefix)


def format_text(text: str, config: FormatConfig, language: str | None = None) -> str:
    """``text`` (no timings) formatted as its whitespace-separated words would be."""
    if not config.active or not text.strip():
        return text
    words = [Word(token, 0.0, 0.0, 1.0) for token in text.split()]
    return " ".join(w.word for w in format_words(words, config, language))


def _text_and_words(
    text: str, words: tuple[Word, ...] | None, config: FormatConfig, language: str | None
) -> tuple[str, tuple[Word, ...] | None]:
    """The formatted text and words. With words, the text is the formatted words — joined by
    spaces where the text has spaces, without where it has none and is exactly its words (a
    language written without spaces) — so text and words never disagree on what was redacted;
    a text without spaces that is not its words is formatted on its own."""
    if not words:
        return format_text(text, config, language), words
    shown = format_words(words, config, language)
    if any(c.isspace() for c in text.strip()):
        return " ".join(w.word for w in shown), shown
    if text.strip() == "".join(w.word for w in words):
        return "".join(w.word for w in shown), shown
    return format_text(text, config, language), shown


def format_final(
    event: FinalTranscript, config: FormatConfig, language: str | None = None
) -> FinalTranscript:
    """A ``transcript.final`` formatted (its language: the final's, else ``language``)."""
    if not config.active:
        return event
    text, words = _text_and_words(event.text, event.words, config, event.language or language)
    return dataclasses.replace(event, text=text, words=words)


def format_partial(
    event: PartialTranscript, config: FormatConfig, language: str | None = None
) -> PartialTranscript:
    """A ``transcript.partial``'s text formatted (a partial leaks no card number either), and its
    ``stable`` prefix with it (:func:`format_with_stable`: formatted exactly as the text is)."""
    if not config.active:
        return event
    if event.stable is None:
        return dataclasses.replace(event, text=format_text(event.text, config, language))
    text, stable = format_with_stable(event.text, len(event.stable.split()), config, language)
    return dataclasses.replace(event, text=text, stable=stable)


def format_transcription(
    result: Transcription, config: FormatConfig, language: str | None = None
) -> Transcription:
    """A whole file's transcription formatted: its text, words and timed pieces."""
    if not config.active:
        return result
    lang = result.language or language
    text, words = _text_and_words(result.text.strip(), result.words, config, lang)
    segments = tuple(
        dataclasses.replace(piece, text=format_text(piece.text.strip(), config, lang))
        for piece in result.segments
    )
    return dataclasses.replace(result, text=text, words=words, segments=segments)


async def format_file(
    result: Transcription, config: FormatConfig, language: str | None = None
) -> Transcription:
    """:func:`format_transcription` off the event loop: a file's thousands of words take
    milliseconds to hundreds of them (docs/benchmarks.md), which no loop may block on."""
    if not config.active:
        return result
    return await asyncio.to_thread(format_transcription, result, config, language)
