"""Deepgram's ``paragraphs=true`` on a pre-recorded answer: ``alternatives[0].paragraphs``, the
shape the official SDK parses (``ListenV1ResponseResultsChannelsItemAlternativesItemParagraphs``)::

    {"transcript": "\\nFirst sentence. Second one.\\n\\nAfter a pause.",
     "paragraphs": [{"sentences": [{"text", "start", "end"}, …],
                     "num_words", "start", "end", "speaker": 0}, …]}

A sentence ends at a word that ends with ``.``, ``?`` or ``!`` (the engine's punctuation, after
formatting); a paragraph ends where the speech pauses :data:`PARAGRAPH_PAUSE_S` or more
between two sentences, or after :data:`MAX_SENTENCES` sentences. Without word times (an engine
that gives none) the text's sentences make one paragraph, timed by the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from asrhub.frames import Word

PARAGRAPH_PAUSE_S = 1.0
MAX_SENTENCES = 8
_END = re.compile(r"[.?!…][\"'”’)\]]*$")


def sentences(words: Sequence[Word]) -> list[list[Word]]:
    out: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        current.append(word)
        if _END.search(word.word) and not re.search(r"^\[[A-Z_]+\]$", word.word):
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def _sentence(words: Sequence[Word]) -> dict[str, Any]:
    return {
        "text": " ".join(w.word for w in words),
        "start": round(words[0].start, 3),
        "end": round(words[-1].end, 3),
    }


def paragraphs(words: Sequence[Word] | None, text: str, duration: float) -> dict[str, Any]:
    """The ``paragraphs`` object of one alternative."""
    groups: list[list[list[Word]]] = []
    for sentence in sentences(words or ()):
        last = groups[-1] if groups else None
        if (
            last is None
            or sentence[0].start - last[-1][-1].end >= PARAGRAPH_PAUSE_S
            or len(last) >= MAX_SENTENCES
        ):
            groups.append([])
        groups[-1].append(sentence)
    items: list[dict[str, Any]] = []
    shown: list[str] = []
    for group in groups:
        said = [_sentence(s) for s in group]
        items.append(
            {
                "sentences": said,
                "speaker": 0,
                "num_words": sum(len(s) for s in group),
                "start": round(group[0][0].start, 3),
                "end": round(group[-1][-1].end, 3),
            }
        )
        shown.append("\n" + " ".join(s["text"] for s in said))
    if not groups and text.strip():
        parts = [p for p in re.split(r"(?<=[.?!…])\s+", text.strip()) if p]
        span = {"start": 0.0, "end": round(duration, 3)}
        items.append(
            {
                "sentences": [{"text": p, **span} for p in parts],
                "speaker": 0,
                "num_words": len(text.split()),
                **span,
            }
        )
        shown.append("\n" + " ".join(parts))
    return {"transcript": "\n".join(shown), "paragraphs": items}
