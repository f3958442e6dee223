"""Semantic end of turn for ``vad_gate``: ask the turn model at a pause, hold the stream for
its verdict, keep the utterance's last 8 s of audio for it.

The gate asks (:meth:`TurnEnd.ask`) at the end of the chunk in which a pause reached the short
silence, and once more if it reaches the second look (:func:`second_look_ms`). Two readers
decide: the smart-turn model on the utterance's audio, and — when the engine started an early
final on this pause (a batch engine) — its transcript: a turn the model calls finished is still
unfinished when the text trails off (ends in "…", "...", "," or a function word such as "the",
"to", "and", full stop or not) and, at the first look of a pause, when it ends without a
sentence's punctuation (Whisper leaves the full stop off where it hears the sentence go on; at
the second look the model decides without it, so an engine that does not punctuate costs the
second look's wait, not the long silence). The early final is the utterance's final if the turn
ends, so waiting for its text costs nothing: the final could not come sooner.

Inline (no running loop: a marble test) the model's verdict comes at once. Off the loop (as the
hub wires it) the model runs in the loop's default executor; until its verdict, every later
frame waits here in order (:meth:`TurnEnd.hold`) and the session's ``pending`` is held, so
``feed`` waits (a real-time client waits ~50 ms; a faster one gets the same verdict at the same
stream position, whatever its speed). The verdict is applied at the position it was asked for:
finished → the gate ends the utterance there; unfinished → it keeps listening (up to the long
silence). Then the held frames are replayed. A model failure counts as unfinished (logged once
per session), so the long silence still ends the utterance.

Bound: the tail keeps references to at most ``WINDOW_S`` seconds of speech audio (plus one
chunk); while a verdict is outstanding, frames wait here (``feed`` is held: one feed's frames).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from asrhub.flow import Pending
from asrhub.frames import TARGET_RATE, Frame, Samples
from asrhub.logging import get_logger
from asrhub.plugin import EarlyFinals

from .turn_model import THRESHOLD, WINDOW_S, TurnModel

log = get_logger("asrhub.turn")
HOLDER = "turn"
TEXT_WAIT_S = 30.0
"""Longest wait for an early final's text (wall time; the engine call has its own timeout, and
the final of a finished turn is that decode, so waiting costs the final nothing); then the
model's verdict stands alone."""
TRAILING = frozenset(
    "the a an to of and or but in at for with my your on from before into by so because if than "
    "as our their his her its this that".split()
)
"""English words a statement does not end with, even where the engine put a full stop after
them (Whisper does, at a pause: "help with.", "leaves at noon from.")."""
HESITANT = frozenset("will can would could should is was are".split())
"""Words that end a sentence only with its punctuation ("I will."); without it, unfinished."""
_END = object()
SECOND_LOOK = 3
"""The second look comes after this many times the short silence (at most half the long one)."""


def second_look_ms(short_ms: int, max_ms: int) -> int:
    """When a pause that is still silent is judged again (see ``vad_gate``'s docstring)."""
    return min(SECOND_LOOK * short_ms, max_ms // 2)


def ends_sentence(text: str | None) -> bool:
    """The transcript ends with a sentence's own punctuation (a punctuating engine, as Whisper,
    leaves it off where it hears the sentence go on)."""
    return (text or "").rstrip().endswith((".", "?", "!", "。", "？", "！"))


def trails_off(text: str | None) -> bool:
    """The transcript of a paused utterance reads as unfinished (see the module docstring)."""
    text = (text or "").strip()
    if not text:
        return False
    if text.endswith(("...", "…", ",", "-", "—", ";", ":")):
        return True
    if text[-1] in "?!":
        return False
    last = text.split()[-1].strip(".\"'").lower()
    return last in TRAILING or (text[-1] != "." and last in HESITANT)


class TurnEnd:
    """One session's semantic end-of-turn state."""

    def __init__(
        self,
        model: TurnModel,
        pending: Pending | None,
        loop: asyncio.AbstractEventLoop | None,
        early: EarlyFinals | None = None,
    ):
        self.model, self.pending, self.loop, self.early = model, pending, loop, early
        self.tail: deque[Samples] = deque()
        self.tail_len = 0
        self.waiting = False
        self.held: deque[Any] = deque()
        self.task: asyncio.Future[bool] | None = None
        self.failed = False
        self.asked = self.finished = 0  # counts, for tests and logs
        self.voiced_end: float | None = None  # of the pause asked about last (a second look)
        self.last: tuple[float, str | None, bool] | None = None
        """The latest verdict off the loop: (the model's probability, the early final's text
        when it was read, finished) — for logs and benchmarks."""

    # ---------------------------------------------------------------- the utterance's tail
    def clear(self) -> None:
        self.tail.clear()
        self.tail_len = 0

    def add(self, samples: Samples) -> None:
        self.tail.append(samples)
        self.tail_len += len(samples)
        limit = WINDOW_S * TARGET_RATE
        while self.tail_len - len(self.tail[0]) >= limit:
            self.tail_len -= len(self.tail.popleft())

    # ---------------------------------------------------------------- asking
    def ask(self, verdict: Callable[[bool], None], voiced_end: float) -> None:
        """Judge the tail (its speech ended at stream time ``voiced_end``); ``verdict(finished)``
        runs now (inline) or on the loop later."""
        audio = np.concatenate(list(self.tail)) if self.tail else np.zeros(0, np.float32)
        self.asked += 1
        first, self.voiced_end = self.voiced_end != voiced_end, voiced_end
        if self.loop is None:
            verdict(self._count(self._probability(audio) > THRESHOLD))
            return
        text = None
        if self.early is not None and self.early.latest is not None:
            end, future = self.early.latest
            text = future if end >= voiced_end - 1e-3 else None  # an early final of this pause
        self.waiting = True
        if self.pending is not None:
            self.pending.hold(HOLDER)
        self.task = self.loop.create_task(self._judge(audio, text, first))
        self.task.add_done_callback(lambda task: self._done(task, verdict))

    async def _judge(self, audio: Samples, text: asyncio.Future[str | None] | None, first: bool) -> bool:
        assert self.loop is not None
        p = await self.loop.run_in_executor(None, self._probability, audio)
        said: str | None = None
        if p > THRESHOLD and text is not None:
            try:
                said = await asyncio.wait_for(asyncio.shield(text), TEXT_WAIT_S)
            except TimeoutError:
                said = None
        finished = p > THRESHOLD and not trails_off(said)
        if first and said is not None and not ends_sentence(said):
            finished = False  # no full stop yet: the second look decides without it
        self.last = (p, said, finished)
        log.debug("turn verdict", probability=round(p, 3), text=said, finished=finished)
        return finished

    def _probability(self, audio: Samples) -> float:
        try:
            return self.model.probability(audio)
        except Exception as exc:  # the model failed: the long silence decides instead
            if not self.failed:
                self.failed = True
                log.warning("turn model failed; waiting for the long silence", error=repr(exc))
            return 0.0

    def _count(self, finished: bool) -> bool:
        self.finished += finished
        return finished

    def _done(self, task: asyncio.Future[bool], verdict: Callable[[bool], None]) -> None:
        if task.cancelled() or self.task is not task:
            return
        self.task = None
        self.waiting = False
        if self.pending is not None:
            self.pending.unhold(HOLDER)
        verdict(self._count(task.exception() is None and task.result()))

    # ---------------------------------------------------------------- frames waiting for a verdict
    def hold(self, frame: Frame | None) -> None:
        """A frame (None: the completion) that arrived while a verdict is outstanding."""
        self.held.append(_END if frame is None else frame)

    def replay(self, on_next: Callable[[Any], None], on_completed: Callable[[], None]) -> None:
        """Pass on the held frames in order, until a new question holds the rest."""
        while self.held and not self.waiting:
            item = self.held.popleft()
            if item is _END:
                on_completed()
            else:
                on_next(item)

    def dispose(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
        self.waiting = False
        self.held.clear()
        self.clear()
        if self.pending is not None:
            self.pending.unhold(HOLDER)
