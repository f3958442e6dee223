"""``format_transcripts``: the session's ``format`` config (numerals, profanity filter,
redaction, punctuation) applied to every ``transcript.final`` (text and words: a formatted
token spans the words it replaced) and to every ``transcript.partial``'s text, so a partial
leaks nothing a final would hide. It sits after the engine stage; every other frame passes
untouched and in order.

A ``session.updated`` frame carries the config from there on (``format`` can change
mid-stream, from the next transcript)::

    in:   ─p─F─U─p─F─|      p/F = transcript.partial/final, U = session.updated
    out:  ─p'F'U─p"F"|      ' = the start config, " = the updated one

When partials carry a ``stable`` prefix, :func:`asrhub.format.format_with_stable` formats the
text and that prefix as one (a token spanning the boundary waits until all its words are
stable), so the stable part is never rewritten.

Formatting is pure and cheap (docs/benchmarks.md, "Formatting"); a failure in it replaces the
transcript by an ``error`` for that utterance (``provider_failed``, the session goes on) —
never the unformatted text, which might hold what ``redact`` was asked to hide.
"""

from __future__ import annotations

from typing import Any

import structlog
from reactivex import Observable, abc

from asrhub.config import FormatConfig
from asrhub.format import format_final, format_partial
from asrhub.frames import ErrorEvent, FinalTranscript, Frame, PartialTranscript, SessionUpdated
from asrhub.plugin import Operator

log = structlog.get_logger(__name__)


class _Current:
    """One session's format config, as the last ``session.updated`` left it."""

    __slots__ = ("config", "language")

    def __init__(self, config: FormatConfig, language: str | None) -> None:
        self.config, self.language = config, language


def format_transcripts(*, config: FormatConfig, language: str | None = None) -> Operator:
    """``config``: the session's ``format``; ``language``: its fixed language (a final's own
    language wins)."""

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            current = _Current(config, language)

            def on_next(frame: Frame) -> None:
                settings, lang = current.config, current.language
                if isinstance(frame, SessionUpdated) and frame.settings is not None:
                    current.config = frame.settings.format
                    current.language = frame.settings.fixed_language
                elif isinstance(frame, FinalTranscript | PartialTranscript) and settings.active:
                    try:
                        if isinstance(frame, FinalTranscript):
                            frame = format_final(frame, settings, lang)
                        else:
                            frame = format_partial(frame, settings, lang)
                    except Exception as exc:  # a bug must not leak what redact hides
                        log.error("format_failed", error=repr(exc))
                        if isinstance(frame, PartialTranscript):
                            return
                        frame = ErrorEvent(
                            code="provider_failed",
                            message="the transcript could not be formatted",
                            segment_id=frame.segment_id,
                        )
                observer.on_next(frame)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Observable(subscribe)

    return operator
