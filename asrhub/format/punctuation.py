"""``punctuate: false``: the engine's punctuation removed (Google's answer without
``enableAutomaticPunctuation``). Punctuation inside a token (``don't``, ``3.5``, ``e-mail``)
stays; a token of punctuation only disappears."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from .tokens import Piece, split


def unpunctuated(pieces: Sequence[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for piece in pieces:
        core = split(piece.word.word)[1]
        if not core:
            continue
        out.append(Piece(replace(piece.word, word=core), piece.lo, piece.hi))
    return out
