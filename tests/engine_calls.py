"""What tests need of an engine's shared pool and the engine itself exposes to nobody else: a
blocking call of the test's own, run on one of the pool's lanes as a batch of its own.

``run_on_lane(pool, fn)`` hands ``pool`` (an :class:`~asrhub.engine.engine_subject.EngineSubject`)
a payload the pool's engine never sees: a wrapper around its ``run_batch`` (installed once per
pool, named ``FakeLaneCall`` as the one fault it injects) runs ``fn`` in the pool's worker
threads instead. The call takes a final lane (priority ``FINAL``, a key of its own), exactly as
a final of one clip would: it holds the lane while ``fn`` blocks, and frees it — abandoning the
thread, counted — when its caller stops waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from asrhub.engine.engine_subject import EngineSubject
from asrhub.plugin import Priority

T = TypeVar("T")


@dataclass(frozen=True)
class FakeLaneCall:
    """A payload that is a blocking call of the test's, not a clip."""

    fn: Callable[[], Any]


def _install(pool: EngineSubject[Any, Any]) -> None:
    real = pool.run_batch
    if getattr(real, "runs_lane_calls", False):
        return

    async def run_batch(payloads: list[Any], partial: bool) -> Sequence[Any]:
        first = payloads[0]
        if isinstance(first, FakeLaneCall):
            return [await asyncio.get_running_loop().run_in_executor(pool.executor, first.fn)]
        return await real(payloads, partial)

    run_batch.runs_lane_calls = True  # type: ignore[attr-defined]
    pool.run_batch = run_batch


async def run_on_lane(pool: EngineSubject[Any, Any], fn: Callable[[], T]) -> T:
    """Run the blocking ``fn`` on a final lane of ``pool`` (a batch of its own) and return its
    result; a caller that stops waiting frees the lane at once (the thread is abandoned)."""
    _install(pool)
    result: T = await pool.submit(FakeLaneCall(fn), key=object(), priority=Priority.FINAL)
    return result
