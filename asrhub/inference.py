"""A bounded worker pool shared by every session of one engine.

Blocking inference (CTranslate2, Vosk) runs here, off the event loop. ``run`` is for work that
must happen (a final): it queues by priority, and a full queue raises :class:`PoolFull`.
``try_run`` is for work that may be shed (a partial): it starts only when a worker is idle and
nobody is waiting, so a partial never delays a final. A call that outlives its timeout, or whose
caller stops waiting (a provider stage's own timeout, a closed session), frees its slot at once
(the stuck thread is abandoned and counted), so one hung engine call cannot poison the pool for
the other sessions.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from time import perf_counter
from typing import TypeVar

from . import metrics

T = TypeVar("T")

FINAL = 0
PARTIAL = 10


class PoolFull(RuntimeError):
    pass


class InferencePool:
    def __init__(self, name: str, *, workers: int = 1, max_queue: int = 1024) -> None:
        self.name = name
        self.workers = workers
        self.max_queue = max_queue
        # Spare threads stand in for calls abandoned after a timeout.
        self._executor = ThreadPoolExecutor(workers * 4, thread_name_prefix=f"asrhub-{name}")
        self._busy = 0
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.abandoned = 0
        self.shed = 0
        metrics.track_pool(self)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return self._busy < self.workers and not self._waiting

    async def run(self, fn: Callable[[], T], *, priority: int = FINAL, timeout: float | None = None) -> T:  # noqa: ASYNC109
        await self._take_slot(priority)
        return await self._execute(fn, timeout)

    def try_run(self, fn: Callable[[], T], *, timeout: float | None = None) -> asyncio.Task[T] | None:
        """Start ``fn`` now if a worker is idle; otherwise shed it and return None."""
        if not self.idle:
            self.shed += 1
            metrics.drop("partial_shed")
            return None
        self._busy += 1
        return asyncio.get_running_loop().create_task(self._execute(fn, timeout))

    async def _take_slot(self, priority: int) -> None:
        if self.idle:
            self._busy += 1
            return
        if len(self._waiting) >= self.max_queue:
            metrics.drop("pool_full")
            raise PoolFull(f"{self.name}: {len(self._waiting)} calls already queued")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._seq), fut))
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
        job.add_done_callback(lambda _: metrics.inference_time(self.name, perf_counter() - started))
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
                self.abandoned += 1
                metrics.inference_abandoned(self.name)
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
