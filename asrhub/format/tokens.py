"""The unit every formatter works on: a :class:`Piece` — one output word and the span of input
words it stands for — and the two moves on it: split a word into its punctuation and its core,
and merge a run of pieces into one (a formatted token spans the words it replaced)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from asrhub.frames import Word

_LEAD = re.compile(r"^[\"'“‘«¿¡(\[{]+")
_TRAIL = re.compile(r"[.,!?;:…\"'”’»)\]}—–]+$")


@dataclass(frozen=True, slots=True)
class Piece:
    """An output word; ``lo``/``hi``: the input words it replaced (``words[lo:hi]``)."""

    word: Word
    lo: int
    hi: int

    @property
    def core(self) -> str:
        return split(self.word.word)[1]

    @property
    def trail(self) -> str:
        return split(self.word.word)[2]

    def with_core(self, core: str) -> Piece:
        lead, _, trail = split(self.word.word)
        return Piece(replace(self.word, word=lead + core + trail), self.lo, self.hi)

    def with_trail(self, trail: str) -> Piece:
        lead, core, _ = split(self.word.word)
        return Piece(replace(self.word, word=lead + core + trail), self.lo, self.hi)


def split(token: str) -> tuple[str, str, str]:
    """``token`` as (leading punctuation, core, trailing punctuation): ``"(555),"`` →
    ``("(", "555", "),")``. A token of punctuation only is all lead."""
    lead_match = _LEAD.match(token)
    lead = lead_match.group(0) if lead_match else ""
    rest = token[len(lead) :]
    trail_match = _TRAIL.search(rest)
    trail = trail_match.group(0) if trail_match else ""
    return lead, rest[: len(rest) - len(trail)], trail


def pieces_of(words: Sequence[Word]) -> list[Piece]:
    return [Piece(w, i, i + 1) for i, w in enumerate(words)]


def merged(run: Sequence[Piece], core: str) -> Piece:
    """One piece for ``run`` (consecutive pieces) whose core is ``core``: the first piece's
    leading and the last one's trailing punctuation kept, from the start of the first word to
    the end of the last, the lowest probability of them (a merged token is as sure as its least
    sure word), the first word's speaker."""
    first, last = run[0], run[-1]
    lead = split(first.word.word)[0]
    trail = split(last.word.word)[2]
    word = Word(
        lead + core + trail,
        first.word.start,
        last.word.end,
        min(p.word.probability for p in run),
        first.word.speaker,
        first.word.speaker_confidence,
    )
    return Piece(word, first.lo, last.hi)


def separated(previous: Piece, piece: Piece, pause_s: float) -> bool:
    """Whether two neighbours belong to different phrases: punctuation after the first, or a
    pause of ``pause_s`` or more between them (times 0: text without timings, no pause)."""
    return bool(previous.trail) or piece.word.start - previous.word.end >= pause_s
