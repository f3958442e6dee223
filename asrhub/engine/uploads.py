"""Batch work (a posted file, ``asrhub.api``, ``asrhub transcribe``) in short jobs, so live
sessions never wait behind an upload.

One cutting policy for every batch caller, applied by ``Hub.transcribe``::

    file:  |─────────────── 10 min of audio ───────────────|
    jobs:  |≤30 s|≤30 s|≤30 s| … |≤30 s|     each cut at the quietest 20 ms of the last 3 s
                                             before the bound (between words, not through one)
    engine: job1 ─ F ─ job2 ─ job3 ─ F ─ …   one job of an upload at a time; F = a live final,
                                             which waits for at most one job, not the file

Each job is one engine call at upload priority (below live finals, above partials, where the
engine honours priorities) and goes through failover on its own. The results are merged into
one :class:`Transcription` in file time: text joined, words and timed pieces shifted by the
job's offset (a job without timed pieces becomes one piece).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import pairwise

from asrhub.errors import HubError
from asrhub.frames import TARGET_RATE, Samples, Word
from asrhub.pcm import quietest_cut
from asrhub.plugin import TimedText, Transcription

JOB_S = 30.0
"""Longest audio of one batch job (Whisper's own window)."""
SEARCH_S = 3.0
"""A job is cut at the quietest 20 ms within this many seconds before its bound."""

Progress = Callable[[float, float], None]
"""``progress(done_s, total_s)``: audio seconds transcribed so far, of the total."""


def jobs(samples: Samples, job_s: float = JOB_S, search_s: float = SEARCH_S) -> list[tuple[int, int]]:
    """Cut points (start, end) in samples: pieces of at most ``job_s`` seconds, each cut at its
    quietest 20 ms in the last ``search_s`` seconds."""
    n, size = len(samples), max(1, int(job_s * TARGET_RATE))
    cuts = [0]
    while n - cuts[-1] > size:
        window = samples[cuts[-1] : cuts[-1] + size]
        cuts.append(cuts[-1] + max(1, quietest_cut(window, TARGET_RATE, search_s)))
    cuts.append(n)
    return list(pairwise(cuts))


def merge(parts: list[tuple[float, Transcription]], duration: float) -> Transcription:
    """Job results (offset in seconds, result) → one transcription in file time."""
    words: list[Word] = []
    pieces: list[TimedText] = []
    has_words = False
    for offset, result in parts:
        if result.words is not None:
            has_words = True
            words += [w.shifted(offset) for w in result.words]
        if result.segments:
            pieces += [p.shifted(offset) for p in result.segments]
        elif result.text.strip():
            end = result.duration or (result.words[-1].end if result.words else 0.0)
            pieces.append(TimedText(result.text.strip(), round(offset, 3), round(offset + end, 3)))
    first = next((r for _, r in parts if r.language), None)
    return Transcription(
        text=" ".join(r.text.strip() for _, r in parts if r.text.strip()),
        language=first.language if first is not None else None,
        language_probability=first.language_probability if first is not None else None,
        words=tuple(words) if has_words else None,
        segments=tuple(pieces),
        duration=duration,
    )


class UploadGate:
    """At most ``size`` uploads decode and transcribe at once; the others wait in line (first
    come, first served) for at most ``wait_s``, then get ``capacity``. Each one holds its bytes
    and up to ``limits.max_upload_s`` of 16 kHz samples, so this bounds the memory of batch work.

    ``async with gate.turn(): …`` — the turn goes back when the block ends, however it ends; a
    caller that stops waiting (cancelled, timed out) leaves the line."""

    def __init__(self, size: int, wait_s: float) -> None:
        self.size, self.wait_s = size, wait_s
        self.busy = 0
        self._line: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._line)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        await self._enter()
        try:
            yield
        finally:
            self._leave()

    async def _enter(self) -> None:
        if self.busy < self.size and not self._line:
            self.busy += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            async with asyncio.timeout(self.wait_s):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self._leave()  # handed the turn just as it gave up: pass it on
            else:
                turn.cancel()
                self._line.remove(turn)
            if isinstance(exc, TimeoutError):
                raise HubError(
                    "capacity",
                    f"{self.size} uploads are being transcribed and none finished within "
                    f"{self.wait_s:g} s; retry later",
                ) from None
            raise

    def _leave(self) -> None:
        if self._line:
            self._line.popleft().set_result(None)  # the turn passes straight to the next in line
        else:
            self.busy -= 1
