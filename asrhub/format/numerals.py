"""``numerals`` (Deepgram's ``numerals`` / ``smart_format``): spoken numbers as digits, then a
few English patterns around them.

1. Numbers, per language, by text2num's ``find_numbers`` over the words (it reports which words
   each number spans, so the digits keep the words' times): English, French, Spanish,
   Portuguese, German, Dutch, Danish and Italian — ``twenty five`` → ``25``, ``vingt et un`` →
   ``21``, ordinals from ``third`` on (``23rd``). Other languages: unchanged. A comma or a pause
   of :data:`PAUSE_S` between two words keeps them apart (``five, six`` stays two numbers).
2. Patterns (English words; the digits may come from any of the languages above):
   three or more single digits in a row → one number (``four one one one`` → ``4111``,
   card and phone numbers); a year said in two halves (``nineteen ninety nine`` → ``1999``,
   ``twenty twenty four`` → ``2024``); ``N percent`` and ``N %`` → ``N%``; ``N dollars [and M cents]`` →
   ``$N[.MM]``, ``N euros`` → ``€N``, ``N cents`` → ``N¢``; ``N [M] a.m./p.m.`` → ``N[:MM] AM``.

Every output token spans the words it replaced (:func:`~asrhub.format.tokens.merged`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from text_to_num import find_numbers

from .tokens import Piece, merged, separated

LANGUAGES = frozenset({"en", "fr", "es", "pt", "de", "nl", "da", "it"})
"""What text2num 3.x reads."""
PAUSE_S = 0.6
"""A pause between two words this long (seconds) or longer separates two numbers."""

_NUMBER = re.compile(r"^\d+(?:[.,]\d+)?$")
_DIGIT = re.compile(r"^\d$")


class _Token:
    """One word as text2num's ``Token`` protocol wants it."""

    __slots__ = ("_text", "apart")

    def __init__(self, text: str, apart: bool) -> None:
        self._text = text
        self.apart = apart

    def text(self) -> str:
        return self._text

    def nt_separated(self, previous: _Token) -> bool:
        return self.apart

    def not_a_number_part(self) -> bool:
        return False


def numbers(pieces: Sequence[Piece], language: str) -> list[Piece]:
    """Spoken numbers → digits (step 1)."""
    if language not in LANGUAGES or not pieces:
        return list(pieces)
    tokens = [
        _Token(p.core.lower(), i > 0 and separated(pieces[i - 1], p, PAUSE_S)) for i, p in enumerate(pieces)
    ]
    out: list[Piece] = []
    at = 0
    for found in find_numbers(tokens, language):
        if found.start < at or found.end <= found.start:
            continue
        out.extend(pieces[at : found.start])
        out.append(merged(pieces[found.start : found.end], found.text))
        at = found.end
    out.extend(pieces[at:])
    return out


def _cores(pieces: Sequence[Piece], i: int, n: int) -> list[str]:
    return [p.core.lower() for p in pieces[i : i + n]]


def _joined(run: Sequence[Piece]) -> bool:
    """No punctuation between the pieces of ``run`` (the last may have some)."""
    return not any(p.trail for p in run[:-1])


Rule = Callable[[Sequence[Piece], int], tuple[int, str] | None]
"""At index i: (how many pieces, the core of the one that replaces them), or None."""


def _digits(pieces: Sequence[Piece], i: int) -> tuple[int, str] | None:
    n = 0
    while (
        i + n < len(pieces) and _DIGIT.match(pieces[i + n].core) and (n == 0 or not pieces[i + n - 1].trail)
    ):
        n += 1
    if n < 3:
        return None
    return n, "".join(p.core for p in pieces[i : i + n])


def _year(pieces: Sequence[Piece], i: int) -> tuple[int, str] | None:
    a, b = [*_cores(pieces, i, 2), "", ""][:2]
    if a.isdigit() and b.isdigit() and len(a) == len(b) == 2 and 10 <= int(a) <= 20 and int(b) >= 10:
        if _joined(pieces[i : i + 2]):
            return 2, a + b
    return None


def _percent(pieces: Sequence[Piece], i: int) -> tuple[int, str] | None:
    cores = _cores(pieces, i, 3)
    if len(cores) >= 2 and _NUMBER.match(cores[0]) and _joined(pieces[i : i + 2]):
        if cores[1] in ("percent", "%"):  # Whisper writes "12 %" now and then
            return 2, cores[0] + "%"
        if cores[1:3] == ["per", "cent"] and _joined(pieces[i : i + 3]):
            return 3, cores[0] + "%"
    return None


def _money(pieces: Sequence[Piece], i: int) -> tuple[int, str] | None:
    cores = _cores(pieces, i, 5)
    if len(cores) < 2 or not cores[0].isdigit() or not _joined(pieces[i : i + 2]):
        return None
    if cores[1] in ("dollars", "dollar"):
        if (
            len(cores) == 5
            and cores[2] == "and"
            and cores[3].isdigit()
            and int(cores[3]) < 100
            and cores[4] in ("cents", "cent")
            and _joined(pieces[i : i + 5])
        ):
            return 5, f"${cores[0]}.{int(cores[3]):02d}"
        return 2, "$" + cores[0]
    if cores[1] in ("euros", "euro"):
        return 2, "€" + cores[0]
    if cores[1] in ("cents", "cent"):
        return 2, cores[0] + "¢"
    return None


def _meridiem(core: str) -> str | None:
    plain = core.replace(".", "").lower()
    return plain.upper() if plain in ("am", "pm") else None


def _time(pieces: Sequence[Piece], i: int) -> tuple[int, str] | None:
    cores = _cores(pieces, i, 3)
    if not cores[0].isdigit() or not 1 <= int(cores[0]) <= 12:
        return None
    if len(cores) >= 2 and (m := _meridiem(pieces[i + 1].core)) and _joined(pieces[i : i + 2]):
        return 2, f"{int(cores[0])} {m}"
    if (
        len(cores) == 3
        and len(cores[1]) == 2
        and cores[1].isdigit()
        and int(cores[1]) < 60
        and (m := _meridiem(pieces[i + 2].core))
        and _joined(pieces[i : i + 3])
    ):
        return 3, f"{int(cores[0])}:{cores[1]} {m}"
    return None


RULES: tuple[Rule, ...] = (_digits, _year, _percent, _money, _time)
"""Tried in this order at each position; the first that matches wins."""


def patterns(pieces: Sequence[Piece]) -> list[Piece]:
    """Step 2 on the output of :func:`numbers`."""
    out: list[Piece] = []
    i = 0
    while i < len(pieces):
        for rule in RULES:
            hit = rule(pieces, i)
            if hit is not None:
                n, core = hit
                piece = merged(pieces[i : i + n], core)
                last = pieces[i + n - 1]
                if "." in last.core and last.trail.startswith("."):  # "p.m." → "PM", not "PM."
                    piece = piece.with_trail(last.trail[1:])
                out.append(piece)
                i += n
                break
        else:
            out.append(pieces[i])
            i += 1
    return out


def numerals(pieces: Sequence[Piece], language: str) -> list[Piece]:
    return patterns(numbers(pieces, language))
