"""``google.longrunning.Operations`` for the hub's ``LongRunningRecognize``: a job runs as a task
in the hub's process and its client polls it by name.

* :meth:`Operations.start` runs a job and answers its ``Operation`` at once (``done: false``);
  ``GetOperation`` then answers ``done: false`` with ``LongRunningRecognizeMetadata``
  (``progress_percent``, ``start_time``, ``last_update_time``) while it runs, and ``done: true``
  with the ``response`` (an ``Any``) or the ``error`` (a ``google.rpc.Status``) once it ended;
* ``CancelOperation`` stops the job (the operation ends with ``CANCELLED``; a finished one stays
  as it is); ``DeleteOperation`` forgets the operation (and stops it first when it still runs:
  nobody could read its result); ``ListOperations`` lists the caller's (``page_size`` and
  ``page_token`` honoured, ``filter`` ignored); ``WaitOperation`` is not served;
* an operation belongs to the API key that started it: any other key gets ``NOT_FOUND``, as
  for a name that never existed;
* bounds: at most ``max_running`` jobs run at once per hub (one more is ``RESOURCE_EXHAUSTED``:
  each holds its whole decoded file); a finished operation is kept ``KEEP_S`` and only the
  newest ``KEEP_FINISHED`` are (older ones: ``NOT_FOUND``);
* operations live in this process only: a restart loses them, and behind a balancer a client
  must poll the node that started its operation (its one HTTP/2 connection does);
  :meth:`Operations.close` (shutdown) stops every running job (``UNAVAILABLE``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import grpc
from google.cloud import speech_v1
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from asrhub.logging import get_logger

log = get_logger("asrhub.transports")

SERVICE = operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name
MAX_RUNNING = 4
"""Jobs running at once per hub: each holds its decoded file (up to 1 h: 230 MB of samples), and
the engine serves upload jobs one 30 s piece at a time anyway."""
KEEP_FINISHED = 256
KEEP_S = 3600.0
SHUTTING_DOWN = "the hub is shutting down"

Progress = Callable[[float], None]
"""A job reports how far it got: a fraction in [0, 1]."""
Job = Callable[[Progress], Awaitable[Message]]
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class OperationFailed(Exception):
    """A job's failure in the answer's terms: the operation's ``error``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _now() -> datetime:
    return datetime.now(UTC)


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


@dataclass(eq=False)
class _Entry:
    name: str
    owner: str | None
    started: datetime = field(default_factory=_now)
    updated: datetime = field(default_factory=_now)
    progress: int = 0
    task: asyncio.Task[None] | None = None
    response: Message | None = None
    error: status_pb2.Status | None = None
    finished: float | None = None  # monotonic time it ended
    stop_reason: str = "cancelled by the client"
    stop_code: int = code_pb2.CANCELLED

    @property
    def done(self) -> bool:
        return self.finished is not None

    def report(self, fraction: float) -> None:
        self.progress = max(self.progress, min(100, int(fraction * 100)))
        self.updated = _now()

    def operation(self) -> operations_pb2.Operation:
        metadata = speech_v1.LongRunningRecognizeMetadata(
            progress_percent=self.progress, start_time=self.started, last_update_time=self.updated
        )
        op = operations_pb2.Operation(
            name=self.name,
            done=self.done,
            metadata=_packed(speech_v1.LongRunningRecognizeMetadata.pb(metadata)),
        )
        if self.error is not None:
            op.error.CopyFrom(self.error)
        elif self.response is not None:
            op.response.CopyFrom(_packed(self.response))
        return op


class Operations(operations_pb2_grpc.OperationsServicer):  # type: ignore[misc]
    """The operations of one hub: the jobs (tasks) and what they answered, by name."""

    def __init__(
        self,
        identify: Callable[[Context], Awaitable[str | None]],
        *,
        max_running: int = MAX_RUNNING,
        keep_finished: int = KEEP_FINISHED,
        keep_s: float = KEEP_S,
    ) -> None:
        self._identify = identify  # the caller's key identity; aborts UNAUTHENTICATED
        self.max_running = max_running
        self.keep_finished = keep_finished
        self.keep_s = keep_s
        self._entries: dict[str, _Entry] = {}
        self._closed = False

    @property
    def running(self) -> int:
        return sum(1 for e in self._entries.values() if not e.done)

    def start(self, owner: str | None, job: Job) -> operations_pb2.Operation:
        """Run ``job`` in the background; raises :class:`OperationFailed` when the hub is at
        its bound (``RESOURCE_EXHAUSTED``) or shutting down (``UNAVAILABLE``)."""
        if self._closed:
            raise OperationFailed(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        self._prune()
        if self.running >= self.max_running:
            raise OperationFailed(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the limit of {self.max_running} running operations is reached; retry later",
            )
        entry = _Entry(name=str(secrets.randbits(63)), owner=owner)
        self._entries[entry.name] = entry
        entry.task = asyncio.create_task(self._run(entry, job), name=f"grpc-operation-{entry.name}")
        return entry.operation()

    async def _run(self, entry: _Entry, job: Job) -> None:
        try:
            entry.response = await job(entry.report)
            entry.report(1.0)
        except asyncio.CancelledError:
            entry.error = status_pb2.Status(code=entry.stop_code, message=entry.stop_reason)
        except OperationFailed as exc:
            entry.error = status_pb2.Status(code=exc.code.value[0], message=exc.message)
        except Exception as exc:  # a bug: the operation says so instead of running forever
            log.exception("grpc operation failed", operation=entry.name)
            entry.error = status_pb2.Status(code=code_pb2.INTERNAL, message=f"internal error: {exc!r}")
        finally:
            entry.updated = _now()
            entry.finished = time.monotonic()

    async def _stop(self, entry: _Entry, reason: str, code: int = code_pb2.CANCELLED) -> None:
        if entry.task is not None and not entry.done:
            entry.stop_reason, entry.stop_code = reason, code
            entry.task.cancel()
            await asyncio.wait([entry.task])

    def _prune(self) -> None:
        """Forget finished operations older than ``keep_s``, and all but the newest
        ``keep_finished`` of the rest."""
        now = time.monotonic()
        finished = sorted((e for e in self._entries.values() if e.done), key=lambda e: e.finished or 0.0)
        stale = [e for e in finished if now - (e.finished or 0.0) > self.keep_s]
        fresh = finished[len(stale) :]
        for entry in stale + fresh[: max(0, len(fresh) - self.keep_finished)]:
            del self._entries[entry.name]

    async def _find(self, name: str, context: Context) -> _Entry:
        owner = await self._identify(context)
        self._prune()
        entry = self._entries.get(name)
        if entry is None or entry.owner != owner:  # another key's: as if it did not exist
            await context.abort(grpc.StatusCode.NOT_FOUND, f"operation {name!r} not found")
        assert entry is not None
        return entry

    async def close(self) -> None:
        """Shutdown: no new operation; every running one ends with ``UNAVAILABLE`` (retry
        elsewhere)."""
        self._closed = True
        running = [e for e in self._entries.values() if not e.done]
        await asyncio.gather(*(self._stop(e, SHUTTING_DOWN, code_pb2.UNAVAILABLE) for e in running))

    # ------------------------------------------------------------------ the RPCs

    async def GetOperation(
        self, request: operations_pb2.GetOperationRequest, context: Context
    ) -> operations_pb2.Operation:
        return (await self._find(request.name, context)).operation()

    async def CancelOperation(
        self, request: operations_pb2.CancelOperationRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._stop(await self._find(request.name, context), "cancelled by the client")
        return empty_pb2.Empty()

    async def DeleteOperation(
        self, request: operations_pb2.DeleteOperationRequest, context: Context
    ) -> empty_pb2.Empty:
        entry = await self._find(request.name, context)
        await self._stop(entry, "deleted by the client")
        self._entries.pop(entry.name, None)
        return empty_pb2.Empty()

    async def ListOperations(
        self, request: operations_pb2.ListOperationsRequest, context: Context
    ) -> operations_pb2.ListOperationsResponse:
        owner = await self._identify(context)
        self._prune()
        mine = [e for e in self._entries.values() if e.owner == owner]
        token = request.page_token or "0"
        if not token.isdigit():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not one this hub gave")
        offset = int(token)
        size = request.page_size if request.page_size > 0 else len(mine)
        page = mine[offset : offset + size]
        more = offset + size < len(mine)
        return operations_pb2.ListOperationsResponse(
            operations=[e.operation() for e in page], next_page_token=str(offset + size) if more else ""
        )
