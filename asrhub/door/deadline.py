"""One deadline timer: a connection that says nothing in time is ended.

``arm(seconds, expire)`` calls ``expire()`` once, ``seconds`` from now, unless :meth:`disarm`
comes first. :meth:`touch` restarts the period from now for an *idle* deadline, at the cost of
one clock read (the timer is not rescheduled per call: when it fires it looks at the latest
touch and waits out the rest). ``hold`` (optional) is asked when the time is up: while it
answers True the deadline waits another period — e.g. while the hub itself is not reading the
connection (its flow control), so the silence is the hub's doing, not the client's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Deadline:
    __slots__ = ("_expire", "_handle", "_hold", "_loop", "_seconds", "_touched")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._seconds = 0.0
        self._expire: Callable[[], None] | None = None
        self._hold: Callable[[], bool] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._touched = 0.0

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def arm(
        self, seconds: float, expire: Callable[[], None], *, hold: Callable[[], bool] | None = None
    ) -> None:
        """(Re)start: ``expire()`` in ``seconds`` unless disarmed or touched meanwhile."""
        self.disarm()
        self._seconds, self._expire, self._hold = seconds, expire, hold
        self._touched = self._loop.time()
        self._handle = self._loop.call_at(self._touched + seconds, self._fire)

    def touch(self) -> None:
        """The connection showed life: the period restarts from now (if armed)."""
        if self._handle is not None:
            self._touched = self._loop.time()

    def disarm(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        self._expire = self._hold = None

    def _fire(self) -> None:
        self._handle = None
        due = self._touched + self._seconds
        now = self._loop.time()
        if due > now:  # touched meanwhile: wait out the rest
            self._handle = self._loop.call_at(due, self._fire)
            return
        if self._hold is not None and self._hold():
            self._touched = now
            self._handle = self._loop.call_at(now + self._seconds, self._fire)
            return
        expire = self._expire
        self._expire = self._hold = None
        if expire is not None:
            expire()
