"""``batch``: group requests into bounded batches — by count and by a short time window.

::

    in : -a-b-----c-d-e-f-g------h-|        max_count = 3, window = 3 ticks
    out: -----[ab]------[cde]--[fg]---[h]|  (a window opens with its first item)

* A batch opens with its first item and closes when it holds ``max_count`` items (at once, on
  that item) or ``window_s`` after its first item arrived, whichever comes first. No empty
  batch is ever emitted and no timer runs while nothing waits.
* ``key(item)``: items whose keys differ never share a batch (each key has its own open batch
  and its own window), e.g. finals and partials, or requests with different decode options.
  Batches are emitted in the order they close; items keep their arrival order inside a batch.
* ``live(item)``: checked when a batch closes; items that are no longer wanted (their caller
  gave up) are left out, and a batch left empty is not emitted. Other items are unaffected.
* Completion emits every open batch (in the order they opened), then completes. An error
  drops the open batches and is passed on. Dispose cancels the timers.

Bound: an open batch holds at most ``max_count`` items; there is at most one open batch per key.
Timing runs on the scheduler given here, else the subscriber's, else a timeout scheduler, so
marble tests run it in virtual time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable
from reactivex.scheduler import TimeoutScheduler

T = TypeVar("T")


def batch(
    max_count: int,
    window_s: float,
    *,
    key: Callable[[T], Hashable] | None = None,
    live: Callable[[T], bool] | None = None,
    scheduler: abc.SchedulerBase | None = None,
) -> Callable[[Observable[T]], Observable[list[T]]]:
    if max_count < 1:
        raise ValueError("batch: max_count must be at least 1")
    if window_s < 0:
        raise ValueError("batch: window_s must not be negative")

    def operator(source: Observable[T]) -> Observable[list[T]]:
        def subscribe(
            observer: abc.ObserverBase[list[T]], scheduler_: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            clock = scheduler or scheduler_ or TimeoutScheduler.singleton()
            lock = threading.RLock()
            open_: dict[Hashable, _Open[T]] = {}  # insertion order = the order batches opened
            stopped = False

            def close(k: Hashable, which: _Open[T] | None = None) -> None:
                with lock:
                    group = open_.get(k)
                    if group is None or (which is not None and group is not which):
                        return  # this window's batch already closed by count
                    del open_[k]
                    group.timer.dispose()
                    items = [i for i in group.items if live is None or live(i)]
                    if items and not stopped:
                        observer.on_next(items)

            def on_next(item: T) -> None:
                with lock:
                    if stopped:
                        return
                    k = key(item) if key is not None else None
                    group = open_.get(k)
                    if group is None:
                        group = open_[k] = _Open[T]()
                        if max_count > 1 and window_s > 0:
                            g = group
                            group.timer = clock.schedule_relative(window_s, lambda *_: close(k, g))
                    group.items.append(item)
                    if len(group.items) >= max_count or window_s == 0:
                        close(k)

            def on_completed() -> None:
                nonlocal stopped
                with lock:
                    for k in list(open_):
                        close(k)
                    stopped = True
                observer.on_completed()

            def on_error(exc: Exception) -> None:
                nonlocal stopped
                with lock:
                    stopped = True
                    for group in open_.values():
                        group.timer.dispose()
                    open_.clear()
                observer.on_error(exc)

            def dispose() -> None:
                nonlocal stopped
                with lock:
                    stopped = True
                    for group in open_.values():
                        group.timer.dispose()
                    open_.clear()

            subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler_)
            return CompositeDisposable(subscription, Disposable(dispose))

        return Observable(subscribe)

    return operator


class _Open(Generic[T]):
    """A batch being filled: its items and the timer that closes it."""

    __slots__ = ("items", "timer")

    def __init__(self) -> None:
        self.items: list[T] = []
        self.timer: abc.DisposableBase = Disposable()
