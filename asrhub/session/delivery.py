"""Bounded, backpressure-aware delivery of one session's events to one subscriber.

Each transport connection reads a session through its own :class:`EventQueue`. Events are pushed
into it the moment they exist (no polling) and the connection drains it at its own pace. The
queue is bounded; when a client reads too slowly:

1. a partial replaces the queued partial of the same utterance (it is superseded anyway);
2. at the bound, the oldest queued partial is dropped;
3. if only events that must not be lost remain (finals, errors, VAD events), the queue stops
   taking events and reports ``slow_consumer``: the transport closes that client.
"""

from __future__ import annotations

import asyncio
from collections import deque

from reactivex import Observable
from reactivex.disposable import Disposable

from asrhub.frames import ErrorEvent, Event, PartialTranscript
from asrhub.metrics.hub import HubMetrics

SLOW_CONSUMER = ErrorEvent(
    code="slow_consumer", message="the client does not read its results fast enough", fatal=True
)


class EventQueue:
    def __init__(self, source: Observable[Event], maxsize: int, *, metrics: HubMetrics | None = None) -> None:
        """``source``: a session's events (``session.events``; :meth:`Session.queue
        <asrhub.session.session.Session.queue>` builds the queue of a session); ``metrics``:
        where drops are counted (None: nowhere)."""
        self.maxsize = maxsize
        self._metrics = metrics
        self.dropped_partials = 0
        self.overflowed = False
        self._items: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._finished = False
        self._subscription = source.subscribe(
            on_next=self._put, on_error=self._on_error, on_completed=self._on_completed
        )

    def __len__(self) -> int:
        return len(self._items)

    def _put(self, event: Event) -> None:
        if self._finished:
            return
        items = self._items
        if isinstance(event, PartialTranscript):
            for i in range(len(items) - 1, -1, -1):
                queued = items[i]
                if isinstance(queued, PartialTranscript) and queued.segment_id == event.segment_id:
                    items[i] = event
                    self._dropped_partial()
                    return
        if len(items) >= self.maxsize:
            for i, queued in enumerate(items):
                if isinstance(queued, PartialTranscript):
                    del items[i]
                    self._dropped_partial()
                    break
            else:
                if isinstance(event, PartialTranscript):
                    self._dropped_partial()
                    return
                self.overflowed = True
                if self._metrics is not None:
                    self._metrics.drop("slow_consumer")
                    self._metrics.error("slow_consumer")
                items.append(SLOW_CONSUMER)
                self._stop()
                return
        items.append(event)
        self._wake()

    def _dropped_partial(self) -> None:
        self.dropped_partials += 1
        if self._metrics is not None:
            self._metrics.drop("partial_dropped")

    def _on_error(self, exc: Exception) -> None:
        self._items.append(ErrorEvent(code="provider_failed", message=str(exc), fatal=True))
        self._stop()

    def _on_completed(self) -> None:
        self._stop()
        # The stream is over: drop the subscription (observer, the session's subject) now, so
        # a queue that still holds a closed session's last events holds nothing else.
        self._subscription = Disposable()

    def _stop(self) -> None:
        self._finished = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Event | None:
        """The next event, or None once the session's stream has ended and the queue is drained."""
        while not self._items:
            if self._finished:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def get_nowait(self) -> Event | None:
        return self._items.popleft() if self._items else None

    def __aiter__(self) -> EventQueue:
        return self

    async def __anext__(self) -> Event:
        event = await self.get()
        if event is None:
            raise StopAsyncIteration
        return event

    def seal(self) -> None:
        """Take no more events; those queued are still delivered, then the iteration ends
        (a connection that hands its session over delivers what it has, then says so)."""
        self._subscription.dispose()
        self._subscription = Disposable()
        self._stop()

    def close(self) -> None:
        """Detach from the session (idempotent); queued events are discarded."""
        self._finished = True
        self._subscription.dispose()
        self._items.clear()
        self._wake()
