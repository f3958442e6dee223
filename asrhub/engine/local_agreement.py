"""LocalAgreement: the stable prefix of an utterance's partials (issue 25).

A batch engine's partials re-decode the growing utterance, and each decode may rewrite any word
of the one before. The words two consecutive decodes agree on — the longest common word prefix
of their unsettled parts, compared without case and punctuation — are *stable*: they are kept
verbatim in every later partial of the utterance, and only the tail after them may change
(the LocalAgreement-2 policy of Macháček et al., "Turning Whisper into Real-Time Transcription
System", 2023) — except that a decode's last word never settles: it may be cut off by the end
of the audio ("jump" for "jumps") or carry a guessed full stop, so a word settles only once the
newer decode has heard a word after it::

    decode 1:  "The quick brown."                stable: ""
    decode 2:  "the quick brown fox jump"        stable: "the quick brown"      (agreed with 1)
    decode 3:  "The quick Brown fox jumps"       stable: "the quick brown fox"  (tail "jumps")
    decode 4:  "the quick brown fox jumps."      stable: "the quick brown fox"  (its last word)
    decode 5:  "the quick brown fox jumps over"  stable: "the quick brown fox jumps"

A decode that disagrees with the stable words does not move them: its words are aligned to the
stable prefix (:func:`difflib.SequenceMatcher`) and only the words after it form the new tail.
The final decode stays authoritative (its own words and timings); :func:`agrees` tells whether
it kept the stable prefix, so a benchmark can count how often it did not.

Bound: one utterance holds its stable words and the previous decode's tail (both at most the
words of one decode).
"""

from __future__ import annotations

import difflib
import re

_PUNCT = re.compile(r"[^\w']+")


def normalized(word: str) -> str:
    """A word as two decodes are compared: lower case, without punctuation."""
    return _PUNCT.sub("", word).lower()


def common_prefix(a: list[str], b: list[str]) -> int:
    """How many leading words ``a`` and ``b`` share (normalized)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if normalized(x) != normalized(y):
            break
        n += 1
    return n


class StablePrefix:
    """The stable words of one utterance (a new one for each utterance)."""

    __slots__ = ("previous", "stable")

    def __init__(self) -> None:
        self.stable: list[str] = []
        self.previous: list[str] | None = None

    @property
    def text(self) -> str:
        return " ".join(self.stable)

    def update(self, hypothesis: str) -> tuple[str, str]:
        """One more decode of the utterance: (the stable text, the whole partial text — the
        stable words verbatim, then this decode's words after them)."""
        words = hypothesis.split()
        tail = words[self._after_stable(words) :]
        if self.previous is not None:  # a decode's last word may be cut off or end in a guessed
            agreed = min(common_prefix(self.previous, tail), len(tail) - 1)  # "." : not yet
            self.stable += tail[:agreed]
            tail = tail[agreed:]
        self.previous = tail
        return self.text, " ".join(self.stable + tail)

    def _after_stable(self, words: list[str]) -> int:
        """The index in ``words`` just after the stable prefix."""
        n = len(self.stable)
        if not n or common_prefix(self.stable, words) == n:
            return min(n, len(words))
        matcher = difflib.SequenceMatcher(
            None, [normalized(w) for w in self.stable], [normalized(w) for w in words], autojunk=False
        )
        blocks = [b for b in matcher.get_matching_blocks() if b.size]
        if not blocks:
            return min(n, len(words))
        last = blocks[-1]
        unmatched = n - (last.a + last.size)  # stable words after the last match: skip as many
        return min(len(words), last.b + last.size + unmatched)


def agrees(stable: str, final: str) -> bool:
    """Whether ``final`` begins with the ``stable`` words (normalized)."""
    want = stable.split()
    return common_prefix(want, final.split()) == len(want)
