"""Backpressure for a push-based stream: a per-session count of work in flight.

Rx has no backpressure of its own. A provider stage calls :meth:`Pending.acquire` when an
utterance enters it and :meth:`Pending.release` when that utterance's final (or error) has left;
``Session.feed`` awaits :meth:`Pending.wait_ready` so a busy engine turns into a slower reader on
the client's socket, not into memory growth. Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


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


class Slots:
    """A bound on a resource shared by the sessions of a hub (compressed-audio decoder threads).

    ``take(start)`` returns True when a slot is free (taken); otherwise ``start`` is queued and
    called, on the loop, when a slot is handed over by ``give``. Everything runs on the event
    loop thread (a worker thread gives a slot back with ``loop.call_soon_threadsafe``)."""

    __slots__ = ("_waiters", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[Callable[[], None]] = deque()

    def take(self, start: Callable[[], None]) -> bool:
        if self.free > 0:
            self.free -= 1
            return True
        self._waiters.append(start)
        return False

    def give(self) -> None:
        if self._waiters:
            self._waiters.popleft()()  # the slot passes straight to the next waiter
        else:
            self.free += 1
