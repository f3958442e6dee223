"""A node's jobs: admitted within bounds, transcribed ``concurrency`` at a time, then delivered.

Bounds: ``jobs.max_queued`` jobs waiting or running, their uploads ``jobs.max_queued_bytes``
together (a job holds its upload only until its transcription starts; the decoded audio then
lives in the upload line, ``limits.max_uploads``), :data:`MAX_FINISHED` finished records kept
for the status endpoint, each at most ``jobs.keep_s``.

States: ``queued`` → ``running`` (transcribing, then delivering) → ``done`` (the callback was
answered 2xx) or ``failed`` (the bounds of delivery were reached, or the target was refused);
``attempts`` counts the callback POSTs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.settings.schema import JobsSettings
from asrhub.tasks import stop_tasks

from .delivery import Callback, Deliverer

log = get_logger("asrhub.jobs")
STOP_S = 5.0
"""Shutdown waits this long for the job workers to stop (a job cut off runs again: its lease,
or its client's retry)."""

MAX_FINISHED = 1000
State = Literal["queued", "running", "done", "failed"]


@dataclass
class Job:
    kind: str
    """Which runner transcribes it (``deepgram``, ``transcribe``)."""
    params: dict[str, list[str]]
    """The request's options (query / form fields), as the runner reads them again."""
    data: bytes | None
    callback: Callback
    key_id: str | None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: State = "queued"
    attempts: int = 0
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    result_ready: float | None = None

    def status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.state,
            "attempts": self.attempts,
            "created": round(self.created, 3),
            "finished": None if self.finished is None else round(self.finished, 3),
            "error": self.error,
        }


Runner = Callable[[Job], Awaitable[tuple[bytes, str | None]]]
"""Transcribe a job: (the callback body — the synchronous answer, or the protocol's error body —,
the error message or None)."""


class Jobs(Protocol):
    """A node's job queue: its own (:class:`JobQueue`) or the cluster's
    (:class:`~asrhub.jobs.redis_jobs.RedisJobs`)."""

    delivered: list[tuple[str, float]]

    def start(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, job: Job) -> Job: ...

    async def status(self, job_id: str, key_id: str | None) -> dict[str, Any] | None: ...


class Workers(ABC):
    """``settings.concurrency`` tasks running ``_work``, and the deliverer they call back with:
    started with the app, cancelled and awaited with it (both queues)."""

    settings: JobsSettings
    deliverer: Deliverer
    _workers: list[asyncio.Task[None]]

    @abstractmethod
    async def _work(self) -> None:
        """One worker: take jobs and run them until cancelled."""

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"asrhub-job-worker-{i}")
            for i in range(self.settings.concurrency)
        ]

    async def close(self) -> None:
        if stuck := await stop_tasks(self._workers, STOP_S):
            log.warning("job workers did not stop when cancelled", tasks=stuck)
        await self.deliverer.close()


class JobQueue(Workers):
    def __init__(self, settings: JobsSettings, run: Runner) -> None:
        self.settings = settings
        self.run = run
        self.deliverer = Deliverer(settings)
        self.jobs: dict[str, Job] = {}
        self.finished: OrderedDict[str, Job] = OrderedDict()
        self.queued_bytes = 0
        self.delivered: list[tuple[str, float]] = []
        """(job id, seconds from result ready to the 2xx answer), the last 1000 (benchmark)."""
        self._line: asyncio.Queue[Job] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    async def submit(self, job: Job) -> Job:
        size = len(job.data or b"")
        if len(self.jobs) >= self.settings.max_queued:
            raise HubError("capacity", f"{self.settings.max_queued} jobs are waiting or running; retry later")
        if self.queued_bytes + size > self.settings.max_queued_bytes:
            raise HubError("capacity", "the waiting jobs hold as much audio as this hub keeps; retry later")
        self.queued_bytes += size
        self.jobs[job.id] = job
        self._line.put_nowait(job)
        return job

    async def status(self, job_id: str, key_id: str | None) -> dict[str, Any] | None:
        """The status of a job of the key ``key_id`` (another key's job is as unknown as a
        missing one)."""
        self._prune()
        job = self.jobs.get(job_id) or self.finished.get(job_id)
        return job.status() if job is not None and job.key_id == key_id else None

    def _prune(self) -> None:
        horizon = time.time() - self.settings.keep_s
        while self.finished:
            oldest = next(iter(self.finished.values()))
            if len(self.finished) <= MAX_FINISHED and (oldest.finished or 0.0) >= horizon:
                break
            self.finished.popitem(last=False)

    async def _work(self) -> None:
        while True:
            job = await self._line.get()
            try:
                await self.process(job)
            except Exception as exc:  # a runner's bug must not stop the worker
                log.exception("job failed", job=job.id)
                job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
            finally:
                self._finish(job)

    def _finish(self, job: Job) -> None:
        if job.data is not None:
            self.queued_bytes -= len(job.data)
            job.data = None
        if job.finished is None:
            job.finished = time.time()
        self.jobs.pop(job.id, None)
        self.finished[job.id] = job
        self._prune()

    async def process(self, job: Job) -> None:
        job.state = "running"
        body, error = await self.run(job)
        if job.data is not None:  # the upload is done with
            self.queued_bytes -= len(job.data)
            job.data = None
        ready = time.monotonic()
        job.result_ready = time.time()

        async def begin() -> int:
            job.attempts += 1
            return job.attempts

        ok, job.attempts, outcome = await self.deliverer.deliver(job.id, job.callback, body, begin)
        if ok:
            self.delivered = [*self.delivered[-999:], (job.id, time.monotonic() - ready)]
        job.state = "done" if ok and error is None else "failed"
        job.error = error if ok else f"callback not delivered: {outcome}"
        job.finished = time.time()
        log.info("job finished", job=job.id, status=job.state, attempts=job.attempts)
