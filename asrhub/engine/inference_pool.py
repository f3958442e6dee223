"""A plain bounded worker pool for blocking engine calls (Vosk's recognizers and whole files).

Blocking inference runs here, off the event loop. ``run`` queues by :class:`~asrhub.plugin.Priority`
(finals before uploads before partials); a full queue raises :class:`~asrhub.plugin.PoolFull`.
A call that outlives its timeout, or whose caller stops waiting (a provider stage's own timeout,
a closed session), frees its slot at once (the stuck thread is abandoned and counted), so one
hung engine call cannot poison the pool for the other sessions.

The batch engines' shared pool, which groups clips of many sessions into one engine call, is
:class:`~asrhub.engine.engine_subject.EngineSubject`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import TypeVar

from asrhub.metrics.hub import PoolStats
from asrhub.plugin import PoolFull, Priority

T = TypeVar("T")


class InferencePool:
    """``workers`` calls at once, at most ``max_queue`` waiting. Its counters (:class:`PoolStats`)
    are its own: it knows no hub; the metrics of every hub whose providers use it report them."""

    def __init__(self, name: str, *, workers: int = 1, max_queue: int = 1024) -> None:
        self.name = name
        self.workers = workers
        self.max_queue = max_queue
        # Spare threads stand in for calls abandoned after a timeout.
        self._executor = ThreadPoolExecutor(workers * 4, thread_name_prefix=f"asrhub-{name}")
        self._busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.stats = PoolStats()

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return self._busy < self.workers and not self._waiting

    async def run(
        self,
        fn: Callable[[], T],
        *,
        priority: Priority = Priority.FINAL,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> T:
        await self._take_slot(priority)
        return await self._execute(fn, timeout)

    async def _take_slot(self, priority: Priority) -> None:
        if self.idle:
            self._busy += 1
            return
        if len(self._waiting) >= self.max_queue:
            self.stats.full += 1
            raise PoolFull(f"{self.name}: {len(self._waiting)} calls already queued")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (int(priority), next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # the slot was handed to us just as we were cancelled
            else:
                fut.cancel()
            raise

    async def _execute(self, fn: Callable[[], T], timeout: float | None) -> T:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        started = perf_counter()
        job = loop.run_in_executor(self._executor, fn)
        timing = self.stats.timing
        job.add_done_callback(lambda _: timing.observe(perf_counter() - started))
        released = False

        def release(_: object = None) -> None:
            nonlocal released
            if not released:
                released = True
                self._release()

        job.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.shield(job), timeout)
        except (TimeoutError, asyncio.CancelledError):
            # Our timeout, or the caller gave up (its own timeout, a closed session): the slot
            # is free at once. A call still running is abandoned to its thread; one that had
            # not started never will.
            if not job.done():
                self.stats.abandoned += 1
                job.cancel()
            release()
            raise

    def _release(self) -> None:
        while self._waiting:
            _, _, fut = heapq.heappop(self._waiting)
            if not fut.done():
                fut.set_result(None)  # hand the slot over; _busy stays the same
                return
        self._busy -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
