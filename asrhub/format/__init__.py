"""Formatting of transcripts (the ``format`` config, Deepgram's ``numerals`` / ``smart_format``
/ ``profanity_filter`` / ``redact``, Google's ``profanityFilter`` /
``enableAutomaticPunctuation``): one module per formatter, each a pass over
:class:`~asrhub.format.tokens.Piece` lists so word times stay aligned — a formatted token
spans the words it replaced. :mod:`asrhub.format.formatter` runs them in order.
"""

from __future__ import annotations

from .formatter import (
    format_file,
    format_final,
    format_partial,
    format_text,
    format_transcription,
    format_with_stable,
    format_words,
)

__all__ = [
    "format_file",
    "format_final",
    "format_partial",
    "format_text",
    "format_transcription",
    "format_with_stable",
    "format_words",
]
