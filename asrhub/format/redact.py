"""``redact``: what a class names is replaced by its marker; the marker spans the words it
replaced (their times, their lowest probability) and keeps the punctuation around them.

Numbers are found in runs: consecutive words that are digits — as the engine wrote them
(``4111``, ``4111-1111``, ``(555)``, ``-4567``) or as spoken and read by text2num (``four one
one``) — with nothing but a comma or a dash between them (``4242, 4242, …``: how Whisper
writes a card number said in groups). Over each run, in this order:

=========  ====================  =============================================================
class      marker                what
=========  ====================  =============================================================
``pci``    ``[CREDIT_CARD]``     a run holding 13–19 digits in a row that pass the Luhn check
                                 (python-stdnum): the whole run, so the expiry date or CVV
                                 said with it (and a group the engine repeated) go too
``ssn``    ``[SSN]``             9 digits that are a valid US SSN (python-stdnum: no area 000,
                                 666 or 9xx, no group 00, no serial 0000)
``phone``  ``[PHONE_NUMBER]``    7 or 10 digits, 11 starting with 1, or ``+`` and 8–15 digits
``numbers````[NUMBER]``          any run of 3 or more digits (Deepgram: "three or more
                                 consecutive numerals")
``email``  ``[EMAIL_ADDRESS]``   a written address (``ann@example.com``) or a spoken one
                                 (``ann dot lee at example dot com``)
=========  ====================  =============================================================

A run that more than one requested class fits gets the first of the table's order.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from stdnum import luhn
from stdnum.us import ssn

from .numerals import numbers
from .tokens import Piece, merged

MARKERS = {
    "pci": "[CREDIT_CARD]",
    "ssn": "[SSN]",
    "phone": "[PHONE_NUMBER]",
    "numbers": "[NUMBER]",
    "email": "[EMAIL_ADDRESS]",
}
_NUMERIC = re.compile(r"^[+\-(]*\d[\d().,\-/]*$")
_JOINS = ("", ",", "-")
"""What may stand between two digit groups of one run (``4242, 4242``: engines write card
and phone numbers so); a full stop, a question mark… ends the run."""
_EMAIL = re.compile(r"^[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+$")
_DOMAIN = re.compile(r"^[\w\-]+(?:\.[\w\-]+)*\.(?:com|org|net|edu|gov|io|co|uk|de|fr|es|it|nl|us|info|biz)$")
TLDS = frozenset({"com", "org", "net", "edu", "gov", "io", "co", "uk", "de", "fr", "es", "it", "nl", "us"})


def _digits(piece: Piece) -> str | None:
    core = piece.core
    return re.sub(r"\D", "", core) if _NUMERIC.match(core) else None


def _runs(pieces: Sequence[Piece]) -> list[tuple[int, int]]:
    """(start, end) of every run of numeric pieces with no punctuation between them."""
    runs: list[tuple[int, int]] = []
    i = 0
    while i < len(pieces):
        if _digits(pieces[i]) is None:
            i += 1
            continue
        j = i + 1
        while j < len(pieces) and pieces[j - 1].trail in _JOINS and _digits(pieces[j]) is not None:
            j += 1
        runs.append((i, j))
        i = j
    return runs


def _has_card(pieces: Sequence[Piece], i: int, j: int) -> bool:
    """Whether some stretch of pieces[i:j] has the digits of a Luhn-valid card number."""
    for a in range(i, j):
        digits = ""
        for b in range(a, j):
            digits += _digits(pieces[b]) or ""
            if len(digits) > 19:
                break
            if len(digits) >= 13 and luhn.is_valid(digits):
                return True
    return False


def _number_class(pieces: Sequence[Piece], i: int, j: int, classes: Collection[str]) -> str | None:
    digits = "".join(_digits(p) or "" for p in pieces[i:j])
    n = len(digits)
    if "ssn" in classes and n == 9 and ssn.is_valid(digits):
        return "ssn"
    plus = pieces[i].core.startswith("+")
    if "phone" in classes and (n in (7, 10) or (n == 11 and digits[0] == "1") or (plus and 8 <= n <= 15)):
        return "phone"
    if "numbers" in classes and n >= 3:
        return "numbers"
    return None


def _email_at(pieces: Sequence[Piece], i: int) -> int | None:
    """The end of a spoken address whose ``at`` is pieces[i] (None: not one)."""
    if i == 0 or pieces[i].core.lower() != "at" or pieces[i - 1].trail:
        return None
    j = i + 1
    if j < len(pieces) and _DOMAIN.match(pieces[j].core.lower()):
        return j + 1
    end = None
    while (
        j + 2 < len(pieces)
        and pieces[j].core.isalnum()
        and not pieces[j].trail
        and pieces[j + 1].core.lower() == "dot"
    ):
        j += 2
        if pieces[j].core.lower() in TLDS:
            end = j + 1
    return end


def _email_start(pieces: Sequence[Piece], at: int) -> int:
    """The start of a spoken address's local part (``ann dot lee`` before ``at``)."""
    i = at - 1
    while i >= 2 and pieces[i - 1].core.lower() == "dot" and pieces[i - 2].core.isalnum():
        i -= 2
    return i


def _emails(pieces: Sequence[Piece]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for i, piece in enumerate(pieces):
        if _EMAIL.match(piece.core):
            spans.append((i, i + 1))
        elif (end := _email_at(pieces, i)) is not None:
            spans.append((_email_start(pieces, i), end))
    return spans


def spans(pieces: Sequence[Piece], classes: Collection[str]) -> list[tuple[int, int, str]]:
    """(start, end, class) of everything to redact in ``pieces``, in order, not overlapping."""
    found: list[tuple[int, int, str]] = []
    for i, j in _runs(pieces):
        if "pci" in classes and _has_card(pieces, i, j):
            found.append((i, j, "pci"))
        elif kind := _number_class(pieces, i, j, classes):
            found.append((i, j, kind))
    if "email" in classes:
        found.extend((a, b, "email") for a, b in _emails(pieces))
    found.sort()
    out: list[tuple[int, int, str]] = []
    for span in found:
        if not out or span[0] >= out[-1][1]:
            out.append(span)
    return out


def redacted(pieces: Sequence[Piece], classes: Collection[str], language: str) -> list[Piece]:
    """``pieces`` with every span of ``classes`` replaced by its marker. Spoken digits are read
    (text2num, ``language``) to find the spans, whether or not ``numerals`` shows them."""
    read = numbers(pieces, language)
    found = spans(read, classes)
    if not found:
        return list(pieces)
    out: list[Piece] = []
    at = 0  # index into pieces
    for a, b, kind in found:
        lo, hi = read[a].lo, read[b - 1].hi
        while at < len(pieces) and pieces[at].hi <= lo:
            out.append(pieces[at])
            at += 1
        run = [p for p in pieces[at:] if p.lo < hi]
        out.append(merged(run, MARKERS[kind]))
        at += len(run)
    out.extend(pieces[at:])
    return out
