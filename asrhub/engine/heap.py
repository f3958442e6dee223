"""Freed memory back to the system once an engine goes idle (glibc's ``malloc_trim``).

An in-process engine call (a CTranslate2 decode) allocates tens of MB of working buffers in its
worker thread and frees them when it returns. glibc keeps what is freed in the thread's arena
for reuse, and after each large free raises its mmap threshold, so the next buffers come from
the arenas too: after the first calls ~60-100 MB of *free* memory stays in the process for good
(docs/benchmarks.md, "Memory against the nearest peer"). ``malloc_trim(0)`` gives the free
pages of every arena back; the next call faults them in again.

:class:`IdleTrim` trims once the engine has had nothing to do for ``delay_s``: never between
the calls of a burst or under load (the engine is not idle then), once after it — a few ms of a
worker thread, measured as no change in the CPU time of a run. Elsewhere than glibc it does
nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable
from concurrent.futures import Executor
from functools import cache

TRIM_IDLE_S = 2.0
"""Idle time before a trim: longer than the gap between a live utterance's partial decodes
(``limits.partial_interval_s``), so a talking session's engine is not trimmed between them."""


@cache
def malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class IdleTrim:
    """Trim the process's heap ``delay_s`` after its engine last went idle (see the module)."""

    def __init__(self, delay_s: float = TRIM_IDLE_S, trim: Callable[[], object] | None = None) -> None:
        self.delay_s = delay_s
        self._trim = trim if trim is not None else malloc_trim()
        self._timer: asyncio.TimerHandle | None = None
        self.trims = 0
        """Trims done (``/metrics`` does not show it; tests and benchmarks read it)."""
        self.done = asyncio.Event()
        """Set after each trim (cleared when the engine is busy again)."""

    def busy(self) -> None:
        """The engine started a call: no trim until it is idle again."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.done.clear()

    def idle(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        """The engine has nothing left to do: trim in ``executor`` unless busy within ``delay_s``."""
        if self._trim is None or self.delay_s < 0:
            return
        self.busy()
        self._timer = loop.call_later(self.delay_s, self._fire, loop, executor)

    def _fire(self, loop: asyncio.AbstractEventLoop, executor: Executor) -> None:
        self._timer = None
        assert self._trim is not None
        try:
            job = loop.run_in_executor(executor, self._trim)
        except RuntimeError:  # the executor is shut down: the engine is closed
            return
        job.add_done_callback(self._trimmed)

    def _trimmed(self, job: asyncio.Future[object]) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        self.trims += 1
        if self._timer is None:
            self.done.set()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
