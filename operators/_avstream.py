"""Streaming decode of a growing compressed byte stream, off the event loop.

One :class:`StreamDecoder` per session: the loop thread ``put``s bytes into a bounded
:class:`ByteFeed`; a daemon thread runs :func:`iter_decode` on it (``av.open`` blocks in
``ByteFeed.read`` until more bytes or the end come) and posts what it decodes to an outbox. The
outbox is drained on the loop thread (``loop.call_soon_threadsafe``), or — with no running loop —
whenever the owner calls :meth:`StreamDecoder.drain`. Frames the owner ``post``s travel in the
byte feed as markers and reach the outbox when the decoder has read every byte before them, so
they keep their place behind the audio decoded from those bytes; ``DONE`` is posted last, when
the thread has ended.

Bounds: ``max_buffer_bytes`` of undecoded input (``put`` refuses more), ``max_backlog`` decoded
samples waiting for the loop (the thread waits), ``max_errors`` error frames per stream (a
repeat of the previous problem is not reported again).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from asrhub.frames import ErrorEvent, Frame

from ._avdecode import iter_decode
from ._bytefeed import ByteFeed

DONE = object()


class StreamDecoder:
    def __init__(
        self,
        encoding: str,
        deliver: Callable[[list[Any]], None],
        *,
        max_buffer_bytes: int,
        max_backlog: int,
        max_errors: int = 5,
        on_room: Callable[[], None] | None = None,
        on_exit: Callable[[], None] | None = None,
        start: bool = True,
    ) -> None:
        self._on_exit = on_exit
        self.feed = ByteFeed(max_buffer_bytes, lambda item: self._send(item, 0), on_room)
        self._encoding = encoding
        self._deliver = deliver
        self._max_backlog, self._errors_left = max_backlog, max_errors
        self._cond = threading.Condition()
        self._items: list[Any] = []
        self._backlog = 0
        self._scheduled = False
        self._closed = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.thread = threading.Thread(target=self._run, name=f"asrhub-decode-{encoding}", daemon=True)
        if start:
            self.thread.start()

    def start(self) -> None:
        """Start the decoder thread (when it was built with ``start=False``)."""
        if not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()

    # ------------------------------------------------------------------ loop thread

    def post(self, item: Frame) -> None:
        """Deliver ``item`` after the audio decoded from every byte put before it."""
        if not self.feed.put_marker(item):
            with self._cond:
                self._items.append(item)
        self.drain()

    def drain(self) -> None:
        with self._cond:
            items, self._items = self._items, []
            self._backlog = 0
            self._scheduled = False
            self._cond.notify_all()
        if items and not self._closed:
            self._deliver(items)

    @property
    def on_loop(self) -> bool:
        """True when a running event loop drains the outbox; else the owner calls ``drain``."""
        return self._loop is not None

    def wait(self) -> None:
        """Without an event loop: block until the decoder thread has ended, delivering as it goes."""
        while self.thread.is_alive():
            self.drain()
            self.thread.join(0.01)
        self.drain()

    def close(self) -> None:
        """Dispose: stop the thread (it sees end-of-stream), deliver nothing more."""
        self._closed = True
        self.feed.abort()
        with self._cond:
            self._items = []
            self._cond.notify_all()

    # ------------------------------------------------------------------ decoder thread

    def _run(self) -> None:
        last_problem = ""
        try:
            for item in iter_decode(self.feed, self._encoding, head=self.feed.head, tail=self.feed.tail):
                if self.feed.aborted:
                    return
                if isinstance(item, str):
                    if self._errors_left > 0 and item != last_problem:  # a burst of one kind: once
                        self._errors_left -= 1
                        self._send(ErrorEvent(code="bad_audio", message=item), 0)
                    last_problem = item
                else:
                    self._send(item, len(item[0]))
        except BaseException as exc:  # nothing may escape a thread
            self._send(ErrorEvent(code="bad_audio", message=f"audio decoder failed: {exc!r}"), 0)
        finally:
            for item in self.feed.close():
                self._send(item, 0)
            self._send(DONE, 0)
            if self._on_exit is not None:
                self._on_exit()

    def _send(self, item: Frame | object, samples: int) -> None:
        with self._cond:
            while self._backlog > self._max_backlog and not self.feed.aborted:
                self._cond.wait(0.5)
            self._items.append(item)
            self._backlog += samples
            schedule = self._loop is not None and not self._scheduled
            self._scheduled = True
        if schedule and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self.drain)
            except RuntimeError:  # the loop is closed: nobody will read what follows
                self.feed.abort()
