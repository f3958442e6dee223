"""Speakers onto a transcription: every word, and each timed piece cut where the speaker changes.

A word takes the speaker of the turn it overlaps most (the nearest turn when it overlaps none:
a word in a gap the VAD left out). A piece (an engine segment) whose words change speaker is cut
at each change; the pieces' text is then their words joined by spaces. A piece without words
takes the speaker it overlaps most.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from asrhub.frames import Word
from asrhub.plugin import TimedText, Transcription

from .diarizer import Turn


def turn_at(turns: Sequence[Turn], start: float, end: float) -> Turn | None:
    """The turn that overlaps [start, end] most, else the nearest turn."""
    if not turns:
        return None
    best, overlap = None, 0.0
    for t in turns:
        o = min(end, t.end) - max(start, t.start)
        if o > overlap:
            best, overlap = t, o
    if best is not None:
        return best
    mid = (start + end) / 2
    return min(turns, key=lambda t: min(abs(t.start - mid), abs(t.end - mid)))


def speaker_at(turns: Sequence[Turn], start: float, end: float) -> int | None:
    """The speaker of :func:`turn_at`."""
    turn = turn_at(turns, start, end)
    return None if turn is None else turn.speaker


def attribute(result: Transcription, turns: Sequence[Turn]) -> Transcription:
    """``result`` with a speaker on every word and every piece (pieces cut at changes)."""
    words = None
    if result.words is not None:
        words = tuple(_attributed(w, turn_at(turns, w.start, w.end)) for w in result.words)
    given = result.segments
    if not given and result.text.strip():
        end = max([result.duration, *(w.end for w in words or ())])
        given = (TimedText(result.text, 0.0, end),)
    pieces: list[TimedText] = []
    for piece in given:
        mine = [w for w in words or () if piece.start - 0.01 <= (w.start + w.end) / 2 <= piece.end + 0.01]
        runs = _runs(mine)
        if len(runs) <= 1:
            speaker = runs[0][0].speaker if runs else speaker_at(turns, piece.start, piece.end)
            pieces.append(replace(piece, speaker=speaker))
            continue
        for k, run in enumerate(runs):
            start = piece.start if k == 0 else run[0].start
            end = piece.end if k == len(runs) - 1 else runs[k + 1][0].start
            text = " ".join(w.word.strip() for w in run)
            pieces.append(replace(piece, text=text, start=start, end=end, speaker=run[0].speaker))
    return replace(result, words=words, segments=tuple(pieces))


def _attributed(word: Word, turn: Turn | None) -> Word:
    if turn is None:
        return replace(word, speaker=None, speaker_confidence=None)
    return replace(word, speaker=turn.speaker, speaker_confidence=turn.confidence)


def _runs(words: Sequence[Word]) -> list[list[Word]]:
    runs: list[list[Word]] = []
    for w in words:
        if runs and runs[-1][-1].speaker == w.speaker:
            runs[-1].append(w)
        else:
            runs.append([w])
    return runs


def majority(words: Sequence[Word] | None) -> int | None:
    """The speaker of most of ``words`` (None without words or speakers)."""
    counts = Counter(w.speaker for w in words or () if w.speaker is not None)
    return counts.most_common(1)[0][0] if counts else None
