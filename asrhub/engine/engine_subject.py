"""The provider subject of a batch engine (whisper, in-process or on a Ray cluster): what every
session of the engine shares.

Every session's clips flow into one Rx subject, are grouped into batches (the ``batch``
operator, given by the provider) and decoded together, finals first, partials on lanes of their
own; each clip's result goes back to its caller. A plain bounded worker pool for blocking calls
is :class:`~asrhub.engine.inference_pool.InferencePool`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Generic, TypeVar

from reactivex import Observable
from reactivex import operators as ops
from reactivex.scheduler.eventloop import AsyncIOScheduler
from reactivex.subject import Subject

from asrhub.engine.heap import TRIM_IDLE_S, IdleTrim
from asrhub.metrics.hub import PoolStats
from asrhub.plugin import PoolFull, Priority, ProviderError

P = TypeVar("P")
R = TypeVar("R")

Grouping = Callable[[Observable["Request[Any, Any]"]], Observable[list["Request[Any, Any]"]]]
"""An Rx operator that groups requests into batches (the ``batch`` operator, given by the provider)."""

PARTIAL_DRAIN_S = 30.0
"""Longest a partial lane stays taken by an engine call nobody waits for any more."""

RunBatch = Callable[[list[P], bool], Awaitable[Sequence["R | BaseException"]]]
"""``run(payloads, partial)``: one engine call on a batch; one result (or exception) per payload."""


@dataclass(eq=False, slots=True)
class Request(Generic[P, R]):
    """One clip waiting for the engine, and where its result goes."""

    payload: P
    key: Hashable
    """Requests share a batch only when their keys are equal (same decode options)."""
    priority: Priority
    future: asyncio.Future[R]

    def live(self) -> bool:
        return not self.future.done()


@dataclass(eq=False, slots=True)
class _Lane:
    """A batch being decoded."""

    requests: list[Request[Any, Any]]
    partial: bool


class EngineSubject(Generic[P, R]):
    """The provider subject: one per engine instance, shared by every session of the process.

    Every session's segments (finals, uploads, partials) are pushed into one Rx subject; the
    ``grouping`` operator (the ``batch`` operator: up to ``batch_max`` clips or a short window)
    turns them into batches; a dispatcher hands each batch to ``run`` (one engine call: a
    batched decode in a worker thread, or a remote call to a Ray replica) and routes each
    clip's result back to its caller's future, so each session sees only its own results and
    keeps its own order (its stage awaits them in segment order).

    Lanes and priorities:

    * ``final_slots`` batches of finals/uploads run at once; queued batches wait by priority
      (finals before uploads), and when a lane frees, waiting batches with the same key are
      merged into one call (up to ``batch_max`` clips): under load the batches grow by
      themselves.
    * Partials have lanes of their own (``partial_slots``), so a partial never occupies the
      engine a final waits for. They are shed first: ``try_submit`` refuses a partial (returns
      None) while any final or upload is running or queued, or while the partial lanes are busy;
      a partial batch still waiting (its batching window) when a final or upload comes is shed
      then, not started beside it (the lanes share the CPU). Cancelling a partial's task
      withdraws it while it waits; once its engine call runs it cannot be stopped, so its lane
      stays taken until the call returns (at most ``PARTIAL_DRAIN_S``; its result is dropped):
      a freed lane would start the next partial beside it, and a final would share the cores
      with both.
    * A batch of finals whose callers have all gone (a stage's timeout, a closed session) frees
      its lane at once; the engine call still running is abandoned and counted (one hung engine
      call cannot poison the lanes). One clip failing fails only that clip: when the whole call raises, each
      clip of the batch is retried alone.
    * ``max_queue`` bounds the clips waiting; beyond it ``submit`` raises :class:`PoolFull`.
    * Once the engine has been idle for ``trim_idle_s``, the memory its calls freed goes back to
      the system (:class:`~asrhub.engine.heap.IdleTrim`; None: never).
    """

    def __init__(
        self,
        name: str,
        run: RunBatch[P, R],
        *,
        grouping: Grouping | None = None,
        batch_max: int = 8,
        final_slots: int = 1,
        partial_slots: int = 1,
        max_queue: int = 1024,
        threads: int = 4,
        trim_idle_s: float | None = TRIM_IDLE_S,
    ) -> None:
        self.name = name
        self.run_batch = run
        self.grouping = grouping
        self.batch_max = max(1, batch_max)
        self.final_slots, self.partial_slots = max(1, final_slots), max(0, partial_slots)
        self.max_queue = max_queue
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix=f"asrhub-{name}")
        """Worker threads for in-process engines (spares stand in for abandoned calls)."""
        self.workers = self.final_slots
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subject: Subject[Request[P, R]] | None = None
        self._finals: list[tuple[int, int, list[Request[P, R]]]] = []  # heap: (priority, seq, batch)
        self._partials: deque[list[Request[P, R]]] = deque()
        self._pending: set[Request[P, R]] = set()
        self._running: set[_Lane] = set()
        self._seq = itertools.count()
        self.calls = 0
        """Engine calls made (a batch of N clips is one call)."""
        self.clips = 0
        self.stats = PoolStats()
        self.trim = IdleTrim(trim_idle_s) if trim_idle_s is not None else None

    # ------------------------------------------------------------------ gauges
    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        return not self._running and not self._pending

    def _finals_busy(self) -> bool:
        return (
            bool(self._finals)
            or any(not lane.partial for lane in self._running)
            or any(r.priority != Priority.PARTIAL for r in self._pending)
        )

    # ------------------------------------------------------------------ callers
    async def submit(self, payload: P, *, key: Hashable = None, priority: Priority = Priority.FINAL) -> R:
        """Queue a clip that must be decoded (a final or an upload) and await its result."""
        if priority == Priority.PARTIAL:
            task = self.try_submit(payload, key=key)
            if task is None:
                raise PoolFull(f"{self.name}: partial shed")
            return await task
        if len(self._pending) >= self.max_queue:
            self.stats.full += 1
            raise PoolFull(f"{self.name}: {len(self._pending)} clips already queued")
        future = self._push(payload, key, priority)
        try:
            return await future
        finally:
            future.cancel()  # no-op when done; a caller that gave up leaves its batch

    def try_submit(self, payload: P, *, key: Hashable = None) -> asyncio.Task[R] | None:
        """Start a partial decode unless the engine has better things to do; None = shed."""
        partials_waiting = sum(1 for r in self._pending if r.priority == Priority.PARTIAL)
        lanes = sum(1 for lane in self._running if lane.partial)
        room = lanes < self.partial_slots if self.partial_slots else not self._running
        if self._finals_busy() or not room or partials_waiting >= self.batch_max:
            self.stats.shed += 1
            return None
        future = self._push(payload, key, Priority.PARTIAL)

        async def wait() -> R:
            try:
                return await future
            finally:
                future.cancel()

        return asyncio.get_running_loop().create_task(wait())

    # ------------------------------------------------------------------ the subject
    def _push(self, payload: P, key: Hashable, priority: Priority) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._subject is None:
            self._bind(loop)
        assert self._subject is not None
        future: asyncio.Future[R] = loop.create_future()
        request = Request(payload, key, priority, future)
        self._pending.add(request)
        future.add_done_callback(lambda _: self._pending.discard(request))
        self._subject.on_next(request)
        return future

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Build the subject → grouping → dispatcher chain on the loop that uses the engine."""
        if self._subject is not None:
            self._subject.on_completed()
        self._loop, self._subject = loop, Subject()
        self._finals.clear()
        self._partials.clear()
        stream: Observable[list[Request[P, R]]]
        if self.grouping is not None:
            stream = self._subject.pipe(self.grouping)  # type: ignore[arg-type]
        else:
            stream = self._subject.pipe(ops.map(lambda r: [r]))
        stream.subscribe(self._queue_batch, scheduler=AsyncIOScheduler(loop))

    def _queue_batch(self, batch: list[Request[P, R]]) -> None:
        batch = [r for r in batch if r.live()]
        if not batch:
            return
        if batch[0].priority == Priority.PARTIAL:
            self._partials.append(batch)
        else:
            heapq.heappush(self._finals, (int(batch[0].priority), next(self._seq), batch))
        self._pump()

    # ------------------------------------------------------------------ dispatcher
    def _pump(self) -> None:
        if self._partials and self._finals_busy():
            self._shed_partials()
        while self._finals and sum(1 for lane in self._running if not lane.partial) < self.final_slots:
            batch = self._merge(heapq.heappop(self._finals)[2])
            if batch:
                self._start(batch, partial=False)
        while self._partials:
            lanes = sum(1 for lane in self._running if lane.partial)
            if self.partial_slots == 0 and (self._running or self._finals):
                break
            if self.partial_slots and lanes >= self.partial_slots:
                break
            batch = [r for r in self._partials.popleft() if r.live()]
            while self._partials and len(batch) < self.batch_max and self._partials[0][0].key == batch[0].key:
                more = self._partials[0]
                take = [r for r in more if r.live()][: self.batch_max - len(batch)]
                batch += take
                if len(take) >= len([r for r in more if r.live()]):
                    self._partials.popleft()
                else:
                    break
            if batch:
                self._start(batch, partial=True)

    def _shed_partials(self) -> None:
        """A final or an upload is due: the partials still waiting are dropped, not started."""
        while self._partials:
            for request in self._partials.popleft():
                if request.live():
                    self.stats.shed += 1
                    request.future.set_exception(PoolFull(f"{self.name}: partial shed for a final"))

    def _merge(self, batch: list[Request[P, R]]) -> list[Request[P, R]]:
        """``batch`` plus waiting batches of the same key and priority, up to ``batch_max``."""
        batch = [r for r in batch if r.live()]
        if not batch or len(batch) >= self.batch_max:
            return batch[: self.batch_max]
        keep: list[tuple[int, int, list[Request[P, R]]]] = []
        for entry in sorted(self._finals):
            prio, _, more = entry
            room = self.batch_max - len(batch)
            if room > 0 and prio == batch[0].priority and more[0].key == batch[0].key:
                more = [r for r in more if r.live()]
                batch += more[:room]
                if more[room:]:
                    keep.append((prio, entry[1], more[room:]))
            else:
                keep.append(entry)
        heapq.heapify(keep)
        self._finals = keep
        return batch

    def _start(self, batch: list[Request[P, R]], *, partial: bool) -> None:
        lane = _Lane(batch, partial)
        self._running.add(lane)
        if self.trim is not None:
            self.trim.busy()
        for r in batch:
            self._pending.discard(r)
        assert self._loop is not None
        self._loop.create_task(self._execute(lane))

    async def _execute(self, lane: _Lane) -> None:
        requests = lane.requests
        started = perf_counter()
        try:
            results = await self._call(requests, lane.partial)
            if results is None:  # every caller left: the lane is free, the call abandoned
                return
            for request, result in zip(requests, results, strict=True):
                if request.future.done():
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)
        finally:
            self.stats.timing.observe(perf_counter() - started)
            self._running.discard(lane)
            if self._loop is not None and not self._loop.is_closed():
                self._pump()
                if self.trim is not None and self.idle:
                    self.trim.idle(self._loop, self.executor)

    async def _call(self, requests: list[Request[Any, Any]], partial: bool) -> Sequence[Any] | None:
        loop = asyncio.get_running_loop()
        job = asyncio.ensure_future(self.run_batch([r.payload for r in requests], partial))
        self.calls += 1
        self.clips += len(requests)
        gone: asyncio.Future[None] = loop.create_future()

        def check(_: object = None) -> None:
            if all(r.future.done() for r in requests) and not gone.done():
                gone.set_result(None)

        for r in requests:
            r.future.add_done_callback(check)
        check()
        waiters: set[asyncio.Future[Any]] = {job, gone}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        gone.cancel()
        if partial and not job.done():  # it cannot be stopped: its lane stays taken until it ends
            await asyncio.wait({job}, timeout=PARTIAL_DRAIN_S)
        if not job.done():
            self.stats.abandoned += 1
            job.cancel()
            job.add_done_callback(lambda j: j.cancelled() or j.exception())
            return None
        try:
            results = list(job.result())
            if len(results) != len(requests):
                raise ProviderError(f"{self.name}: {len(results)} results for {len(requests)} clips")
            return results
        except Exception as exc:
            if len(requests) == 1:
                return [exc]
            # one bad clip must not fail the others: each is tried alone
            return [(await self._call([r], partial) or [exc])[0] for r in requests]

    def shutdown(self) -> None:
        if self.trim is not None:
            self.trim.cancel()
        if self._subject is not None:
            self._subject.on_completed()
            self._subject = None
        for lane in self._running:
            for r in lane.requests:
                r.future.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
