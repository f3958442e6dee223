"""The engine stage of the session tests' fault injectors: each ``RawAudio`` frame is one
utterance, handled by the test's own coroutine while it holds a ``ctx.pending`` slot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import reactivex
from reactivex import Observable

from asrhub.frames import Frame, RawAudio
from asrhub.plugin import Operator, SessionContext


def utterance_stage(
    ctx: SessionContext,
    work: Callable[[int, RawAudio], Awaitable[Frame]],
    *,
    pass_other: bool = False,
    last: Frame | None = None,
) -> Operator:
    """RawAudio frame ``n`` (from 1) takes a pending slot and starts ``work(n, frame)`` at once
    (utterances overlap); its result goes downstream, then the slot is released. Other frames
    pass through if ``pass_other``. On completion: every utterance's work is awaited, ``last``
    (if given) is emitted, then the stage completes. Disposing cancels the work still running."""

    def stage(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: Any, scheduler: Any = None) -> Any:
            loop = asyncio.get_running_loop()
            tasks: list[asyncio.Task[None]] = []

            async def utterance(n: int, frame: RawAudio) -> None:
                observer.on_next(await work(n, frame))
                ctx.pending.release()

            def on_next(frame: Frame) -> None:
                if isinstance(frame, RawAudio):
                    ctx.pending.acquire()
                    tasks.append(loop.create_task(utterance(len(tasks) + 1, frame)))
                elif pass_other:
                    observer.on_next(frame)

            def on_completed() -> None:
                started = list(tasks)

                async def drain() -> None:
                    await asyncio.gather(*started)
                    if last is not None:
                        observer.on_next(last)
                    observer.on_completed()

                tasks.append(loop.create_task(drain()))

            sub = source.subscribe(on_next, observer.on_error, on_completed)

            def dispose() -> None:
                sub.dispose()
                for task in tasks:
                    task.cancel()

            return reactivex.disposable.Disposable(dispose)

        return Observable(subscribe)

    return stage
