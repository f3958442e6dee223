"""The ordered engine stage: what every engine stage of the hub shares.

An engine stage (the last operator of a session's chain) hands each utterance to an engine as
a *job* — a coroutine that returns that utterance's ``transcript.final`` or ``error`` — and
:class:`Ordered` gives the rules every engine keeps::

    in :  --u1------u2--u3--v---------|      u = an utterance handed over (add)   v = any other frame
    job1:   [=======F1]                      jobs run at once, as tasks on the event loop
    job2:             [=F2]
    job3:                 [==💥]              💥 = the job raised
    out:  ----------v---F1F2--E3-------|     v passes at once; finals leave in utterance order;
                                             E3 = error provider_failed, segment_id 3 (logged)

* **exactly one outcome per utterance**: its job's event, or — whatever the job raises — one
  non-fatal ``provider_failed`` error with its ``segment_id``; outcomes leave in the order the
  utterances were added, whatever order the jobs finish in;
* **backpressure**: ``ctx.pending`` is held from ``add`` until the outcome has left, so
  ``Session.feed`` waits while ``limits.max_pending_segments`` utterances are unfinished;
* **completion** (``session.end``) waits for every outstanding outcome; **dispose** (a closed
  session) cancels every job and nothing is emitted afterwards;
* an exception in the stage's own ``on_next`` never escapes: it is logged and becomes that
  utterance's outcome (see :meth:`Ordered.fail`).

An engine supplies only a :class:`Run` (what to do with each frame); :func:`engine_stage` turns
it into an operator. The batch engines' stage (:mod:`asrhub.engine.batch_stage`), the remote streaming
engines' (:mod:`asrhub.engine.stream_stage`) and Vosk's are built on it; failover and the shared
circuit breakers live in :mod:`asrhub.engine.failover` and :mod:`asrhub.engine.breaker`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from asrhub.engine.failover import describe
from asrhub.frames import ErrorEvent, Event, Frame, Segment
from asrhub.plugin import Operator, SessionContext


class Run(Protocol):
    """One session's engine state: frames in, jobs and frames out through its :class:`Ordered`."""

    @property
    def segment_id(self) -> int | None:
        """The utterance a failure of :meth:`on_next` on a frame that is not a ``Segment``
        belongs to (the one being streamed); None: no utterance (a session-level error)."""

    def on_next(self, frame: Frame) -> None: ...

    def on_completed(self) -> None: ...

    def dispose(self) -> None: ...


class Ordered:
    """The ordered output of one session's engine stage (see the module docstring)."""

    def __init__(self, ctx: SessionContext, observer: abc.ObserverBase[Frame], name: str) -> None:
        self.ctx, self.observer, self.name = ctx, observer, name
        self.loop = asyncio.get_running_loop()
        self.jobs: deque[tuple[int, asyncio.Task[Event]]] = deque()
        self.completed = False
        self.done = False

    @property
    def outstanding(self) -> int:
        return len(self.jobs)

    def oldest(self) -> int | None:
        """The segment id of the oldest utterance without an outcome (partials of a later one
        would be overtaken by its final anyway)."""
        return self.jobs[0][0] if self.jobs else None

    def add(self, segment_id: int, job: Coroutine[Any, Any, Event]) -> asyncio.Task[Event]:
        self.ctx.pending.acquire()
        task = self.loop.create_task(self._guard(segment_id, job))
        self.jobs.append((segment_id, task))
        task.add_done_callback(lambda _: job.close())  # cancelled before it started: no warning
        task.add_done_callback(self._flush)
        return task

    def emit(self, frame: Frame) -> None:
        if not self.done:
            self.observer.on_next(frame)

    def fail(self, segment_id: int | None, exc: Exception) -> None:
        """The stage itself raised on a frame of utterance ``segment_id``: logged, and the
        utterance's outcome unless it already has a job (which then gives it)."""
        self.ctx.log.exception("engine stage failed", provider=self.name, segment_id=segment_id)
        if segment_id is None:
            self.emit(ErrorEvent("provider_failed", describe(self.name, exc)))
        elif all(sid != segment_id for sid, _ in self.jobs):
            self.add(segment_id, _raise(exc))

    def complete(self) -> None:
        self.completed = True
        self._flush()

    def dispose(self) -> None:
        self.done = True
        for _, task in self.jobs:
            task.cancel()
        self.jobs.clear()

    async def _guard(self, segment_id: int, job: Coroutine[Any, Any, Event]) -> Event:
        try:
            return await job
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in an engine stage fails one utterance, not the session
            if not isinstance(exc, _StageFailure):
                self.ctx.log.exception("utterance failed", provider=self.name, segment_id=segment_id)
            cause = exc.__cause__ if isinstance(exc, _StageFailure) and exc.__cause__ else exc
            return ErrorEvent("provider_failed", describe(self.name, cause), False, segment_id)

    def _flush(self, _: object = None) -> None:
        while self.jobs and self.jobs[0][1].done() and not self.done:
            _, task = self.jobs.popleft()
            self.observer.on_next(task.result())
            self.ctx.pending.release()
        if self.completed and not self.jobs and not self.done:
            self.done = True
            self.observer.on_completed()


class _StageFailure(Exception):
    """Carries an exception :meth:`Ordered.fail` has logged already."""


async def _raise(exc: Exception) -> Event:
    raise _StageFailure() from exc


def engine_stage(ctx: SessionContext, name: str, make_run: Callable[[Ordered], Run]) -> Operator:
    """The operator of an engine stage: one :class:`Run` and one :class:`Ordered` per session."""

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            out = Ordered(ctx, observer, name)
            run = make_run(out)

            def on_next(frame: Frame) -> None:
                if out.done:
                    return
                try:
                    run.on_next(frame)
                except Exception as exc:  # never let an exception escape on_next
                    if not isinstance(frame, Segment):
                        out.fail(run.segment_id, exc)
                    elif frame.final:
                        out.fail(frame.segment_id, exc)
                    else:  # a partial is best effort: its final still comes
                        ctx.log.exception("partial failed", provider=name, segment_id=frame.segment_id)

            def on_completed() -> None:
                if not out.done:
                    run.on_completed()

            def on_error(exc: Exception) -> None:
                dispose()
                observer.on_error(exc)

            subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)

            def dispose() -> None:
                run.dispose()
                out.dispose()
                subscription.dispose()

            return Disposable(dispose)

        return Observable(subscribe)

    return operator
