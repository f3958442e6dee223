"""Backpressure for a push-based stream: a per-session count of work in flight.

Rx has no backpressure of its own. A provider stage calls :meth:`Pending.acquire` when an
utterance enters it and :meth:`Pending.release` when that utterance's final (or error) has left;
``Session.feed`` awaits :meth:`Pending.wait_ready` so a busy engine turns into a slower reader on
the client's socket, not into memory growth. Everything here runs on the event loop thread.

Also the light links of the per-frame path: :class:`Stage` (an Observable whose subscribers are
called without reactivex's per-item observer wrapper) and :class:`Inlet` (a session's input).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from reactivex import Observable
from reactivex.abc import DisposableBase, SchedulerBase
from reactivex.disposable import Disposable


class Pending:
    __slots__ = ("_waiters", "count", "holders", "limit")

    def __init__(self, limit: int) -> None:
        self.count = 0
        self.limit = limit
        self.holders: set[str] = set()
        """Stages whose own input buffer is at its bound (Vosk's audio queue, the compressed
        audio decoder's byte feed): ``feed`` waits while any holds."""
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def ready(self) -> bool:
        return self.count < self.limit and not self.holders

    @property
    def held(self) -> bool:
        return bool(self.holders)

    def hold(self, holder: str) -> None:
        self.holders.add(holder)

    def unhold(self, holder: str) -> None:
        if holder in self.holders:
            self.holders.discard(holder)
            if self.ready:
                self._wake()

    def acquire(self) -> None:
        self.count += 1

    def release(self) -> None:
        if self.count > 0:
            self.count -= 1
        if self.ready:
            self._wake()

    async def wait_ready(self) -> None:
        while not self.ready:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if not fut.done():
                    fut.cancel()

    def open_all(self) -> None:
        """Release every waiter for good (the session closed): ``feed`` must never hang."""
        self.limit = 1 << 30
        self.holders.clear()
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)


class PendingPart(Pending):
    """One part of a session's :class:`Pending` — a channel of a multichannel session, whose
    chain has its own VAD, decoder and engine stream: its holds are its own (a stage of one
    channel releasing its hold never releases another channel's of the same name), while the
    utterance count and the waiting ``feed`` are the session's."""

    __slots__ = ("_of", "_part")

    def __init__(self, of: Pending, part: str) -> None:  # no Pending state of its own
        self._of, self._part = of, part

    @property
    def count(self) -> int:  # type: ignore[override]
        return self._of.count

    @property
    def ready(self) -> bool:
        return self._of.ready

    @property
    def held(self) -> bool:
        return self._of.held

    def hold(self, holder: str) -> None:
        self._of.hold(f"{holder}/{self._part}")

    def unhold(self, holder: str) -> None:
        self._of.unhold(f"{holder}/{self._part}")

    def acquire(self) -> None:
        self._of.acquire()

    def release(self) -> None:
        self._of.release()

    async def wait_ready(self) -> None:
        await self._of.wait_ready()

    def open_all(self) -> None:
        self._of.open_all()


class Claim:
    """One session's claim on a :class:`Slots` slot: waiting in line, then holding, then done."""

    __slots__ = ("held", "key", "start")

    def __init__(self, start: Callable[[], None], key: str | None) -> None:
        self.start: Callable[[], None] | None = start
        self.key = key
        self.held = False


class Slots:
    """A bound on a resource shared by the sessions of a hub (compressed-audio decoder threads),
    with a share per API key.

    ``take(start, key)`` returns a :class:`Claim`: held at once when a slot is free and the key
    is under its share; otherwise it waits in line and ``start`` is called, on the loop, when a
    slot is handed to it. ``leave(claim)`` ends a claim either way (idempotent): a waiting one
    leaves the line (its session was disposed), a held one gives its slot back, which goes to
    the first waiter in line whose key is under its share — handed over in a loop, never by
    recursion. A key holds at most ``per_key`` slots (None, a session without a key: no share
    of its own). Everything runs on the event loop thread (a worker thread gives a slot back
    with ``loop.call_soon_threadsafe``)."""

    __slots__ = ("_handing", "_held", "_waiters", "free", "per_key", "size")

    def __init__(self, size: int, per_key: int | None = None) -> None:
        self.size = self.free = size
        self.per_key = min(size, per_key) if per_key is not None else size
        self._held: dict[str, int] = {}
        self._waiters: dict[Claim, None] = {}  # in arrival order; O(1) removal
        self._handing = False

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def held_by(self, key: str | None) -> int:
        return self._held.get(key, 0) if key is not None else 0

    def take(self, start: Callable[[], None], key: str | None = None) -> Claim:
        claim = Claim(start, key)
        if self.free > 0 and self._fits(key):
            self._hold(claim)
        else:
            self._waiters[claim] = None
        return claim

    def leave(self, claim: Claim) -> None:
        claim.start = None
        if claim.held:
            claim.held = False
            self.free += 1
            if claim.key is not None:
                left = self._held[claim.key] - 1
                if left:
                    self._held[claim.key] = left
                else:
                    del self._held[claim.key]
            self._hand_over()
        else:
            self._waiters.pop(claim, None)

    def _fits(self, key: str | None) -> bool:
        return key is None or self._held.get(key, 0) < self.per_key

    def _hold(self, claim: Claim) -> None:
        self.free -= 1
        claim.held = True
        if claim.key is not None:
            self._held[claim.key] = self._held.get(claim.key, 0) + 1

    def _hand_over(self) -> None:
        """Free slots to the first waiters whose key fits, one by one. A ``start`` that gives
        its slot back at once only adds to ``free``: this loop hands it on."""
        if self._handing:
            return
        self._handing = True
        try:
            while self.free > 0 and self._waiters:
                claim = next((c for c in self._waiters if self._fits(c.key)), None)
                if claim is None:
                    return  # every waiter's key is at its share
                del self._waiters[claim]
                self._hold(claim)
                start, claim.start = claim.start, None
                if start is not None:
                    start()
        finally:
            self._handing = False


# --------------------------------------------------------------------------- light links


def _ignore(*_args: object) -> None:
    return None


def _raise(exc: Exception) -> None:
    raise exc


class Link:
    """What a :class:`Stage` hands its subscribe function as the observer.

    ``on_next`` *is* the subscriber's own callable, so an item costs one call, not two (reactivex
    wraps every subscriber in an ``AutoDetachObserver`` whose ``on_next`` checks a flag and then
    calls it). The Rx grammar holds all the same: after ``on_error``, ``on_completed`` or
    ``dispose``, ``on_next`` is a no-op and the upstream subscription is disposed, as reactivex
    does. Everything runs on one thread (the event loop), like the rest of a session.
    """

    __slots__ = ("_done", "_error", "_upstream", "on_next", "stopped")

    def __init__(
        self,
        on_next: Callable[[Any], None] | None,
        on_error: Callable[[Exception], None] | None,
        on_completed: Callable[[], None] | None,
    ) -> None:
        self.on_next: Callable[[Any], None] = on_next or _ignore
        self._error = on_error or _raise
        self._done = on_completed or _ignore
        self._upstream: DisposableBase | None = None
        self.stopped = False

    def on_error(self, exc: Exception) -> None:
        if self.stopped:
            return
        self._stop()
        try:
            self._error(exc)
        finally:
            self.dispose()

    def on_completed(self) -> None:
        if self.stopped:
            return
        self._stop()
        try:
            self._done()
        finally:
            self.dispose()

    def dispose(self) -> None:
        self._stop()
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            upstream.dispose()

    def _stop(self) -> None:
        self.stopped = True
        self.on_next = _ignore

    def attach(self, upstream: DisposableBase) -> None:
        if self.stopped:  # ended while subscribing: let go of the upstream at once
            upstream.dispose()
        else:
            self._upstream = upstream


class Stage(Observable[Any]):
    """An Observable whose subscribers get a :class:`Link` instead of reactivex's wrapper.

    Drop-in for ``Observable(subscribe)`` in the per-frame path (operators, a session's input):
    same subscribe signatures, same grammar, one Python call per item and per stage fewer."""

    def subscribe(  # type: ignore[override]
        self,
        on_next: Any = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: SchedulerBase | None = None,
    ) -> DisposableBase:
        if on_next is not None and callable(getattr(on_next, "on_next", None)):
            observer = on_next
            on_next, on_error, on_completed = observer.on_next, observer.on_error, observer.on_completed
        link = Link(on_next, on_error, on_completed)
        try:
            upstream = self._subscribe_core(link, scheduler)  # type: ignore[arg-type]
        except Exception as exc:
            if link.stopped:
                raise
            link.on_error(exc)
            return link  # type: ignore[return-value]
        if not isinstance(upstream, DisposableBase) and not hasattr(upstream, "dispose"):
            upstream = Disposable(upstream)
        link.attach(upstream)
        return link  # type: ignore[return-value]


class Inlet(Stage):
    """A session's input: the one subscriber (its pipeline's first stage) is called directly,
    without the locks and observer-list copy of a ``Subject``. A second subscriber is an error:
    a session's input feeds exactly one pipeline."""

    def __init__(self) -> None:
        super().__init__(self._attach)  # type: ignore[arg-type]  # a Stage subscribes with a Link
        self._link: Link | None = None

    def _attach(self, observer: Link, _scheduler: SchedulerBase | None = None) -> DisposableBase:
        if self._link is not None:
            raise RuntimeError("a session's input takes one subscriber")
        self._link = observer
        return Disposable()

    def on_next(self, value: Any) -> None:
        link = self._link
        if link is not None:
            link.on_next(value)

    def on_completed(self) -> None:
        link = self._link
        if link is not None:
            link.on_completed()

    def on_error(self, exc: Exception) -> None:
        link = self._link
        if link is not None:
            link.on_error(exc)
