"""Streaming decode of a growing compressed byte stream, off the event loop.

One :class:`StreamDecoder` per session: the loop thread ``put``s bytes into a bounded
:class:`ByteFeed`; a daemon thread runs :func:`iter_decode` on it (``av.open`` blocks in
``ByteFeed.read`` until more bytes or the end come) and posts what it decodes to an outbox. The
outbox is drained on the loop thread (``loop.call_soon_threadsafe``), or — with no running loop —
whenever the owner calls :meth:`StreamDecoder.drain`. Frames the owner ``post``s travel in the
byte feed as markers and reach the outbox when the decoder has read every byte before them, so
they keep their place behind the audio decoded from those bytes; ``DONE`` is posted last, when
the thread has ended.

The heavy work happens on the decoder thread: decoding, resampling to the output rate, making
samples finite and clipping them (``iter_decode``), and joining decoded frames into
:class:`Block` s of up to :data:`BLOCK_S` of audio. The loop only wraps blocks into chunks, at
most :data:`DRAIN_S` of audio per callback (the rest in the next one), so one session's flood
of decoded audio cannot hold the loop for the others.

Bounds: ``max_buffer_bytes`` of undecoded input (``put`` refuses more), ``max_backlog`` decoded
samples waiting for the loop (the thread waits), ``max_errors`` error frames per stream (a
repeat of the previous problem is not reported again), ``stall_s`` without decoded output (the
thread stops and a fatal ``timeout`` is posted).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from asrhub.frames import TARGET_RATE, ErrorEvent, Frame, Samples

from ._avdecode import MAX_RATE, iter_decode
from ._bytefeed import ByteFeed

DONE = object()
BLOCK_S = 1.0
"""Audio joined into one chunk on the decoder thread (at most)."""
DRAIN_S = 1.0
"""Audio the loop takes from the outbox in one callback (at least one block)."""


class Block:
    """Decoded samples joined on the decoder thread; the loop takes ``samples`` once it is drained."""

    __slots__ = ("buf", "n")

    def __init__(self, size: int) -> None:
        self.buf = np.empty(size, np.float32)
        self.n = 0

    def add(self, x: Samples) -> int:
        """Copy as much of ``x`` as fits; returns how much."""
        k = min(len(x), len(self.buf) - self.n)
        self.buf[self.n : self.n + k] = x[:k]
        self.n += k
        return k

    @property
    def samples(self) -> Samples:
        """The samples (a copy when the block is mostly empty, so a chunk never pins a whole block)."""
        return self.buf[: self.n] if 2 * self.n >= len(self.buf) else self.buf[: self.n].copy()


class StreamDecoder:
    def __init__(
        self,
        encoding: str,
        deliver: Callable[[list[Any]], None],
        *,
        max_buffer_bytes: int,
        max_backlog: int,
        rate: int = TARGET_RATE,
        max_rate: int = MAX_RATE,
        stall_s: float | None = None,
        max_errors: int = 5,
        on_room: Callable[[], None] | None = None,
        on_exit: Callable[[], None] | None = None,
        start: bool = True,
    ) -> None:
        self._on_exit = on_exit
        self.feed = ByteFeed(max_buffer_bytes, lambda item: self._send(item), on_room, stall_s=stall_s)
        self._encoding = encoding
        self._deliver = deliver
        self._rate, self._max_rate, self._stall_s = rate, max_rate, stall_s
        self._block = max(1, round(BLOCK_S * rate))
        self._drain = max(1, round(DRAIN_S * rate))
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
            self.feed.produced()  # the stall clock starts with the thread
            self.thread.start()

    # ------------------------------------------------------------------ loop thread

    def post(self, item: Frame) -> None:
        """Deliver ``item`` after the audio decoded from every byte put before it."""
        if not self.feed.put_marker(item):
            with self._cond:
                self._items.append(item)
        self.drain(everything=self._loop is None)

    def drain(self, *, everything: bool = True) -> None:
        """Deliver the outbox; on the loop (``everything=False``) at most ``DRAIN_S`` of audio
        per call, the rest in another callback."""
        with self._cond:
            items = self._items
            if everything:
                self._items, self._backlog = [], 0
            else:
                taken = i = 0
                while i < len(items) and taken < self._drain:
                    if type(items[i]) is Block:
                        taken += items[i].n
                    i += 1
                items, self._items = items[:i], items[i:]
                self._backlog = max(0, self._backlog - taken)
            more = bool(self._items) and self._loop is not None and not everything
            self._scheduled = more
            self._cond.notify_all()
        if more and self._loop is not None:
            self._loop.call_soon(self._drain_some)
        if items and not self._closed:
            self._deliver(items)

    def _drain_some(self) -> None:
        self.drain(everything=False)

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
        feed = self.feed
        try:
            for item in iter_decode(
                feed,
                self._encoding,
                head=feed.head,
                tail=feed.tail,
                rate=self._rate,
                max_rate=self._max_rate,
            ):
                if feed.aborted:
                    return
                if isinstance(item, str):
                    code = getattr(item, "code", "bad_audio")
                    if self._errors_left > 0 and item != last_problem:  # a burst of one kind: once
                        self._errors_left -= 1
                        self._send(ErrorEvent(code=code, message=str(item)))  # a plain str on the wire
                    last_problem = item
                elif len(item):
                    feed.produced()
                    self._send_audio(item)
        except BaseException as exc:  # nothing may escape a thread
            self._send(ErrorEvent(code="bad_audio", message=f"audio decoder failed: {exc!r}"))
        finally:
            if feed.stalled and not self._closed:
                message = f"the {self._encoding} decoder produced no audio for {self._stall_s:g} s"
                self._send(ErrorEvent(code="timeout", message=message, fatal=True))
            for item in feed.close():
                self._send(item)
            self._send(DONE)
            if self._on_exit is not None:
                self._on_exit()

    def _send_audio(self, x: Samples) -> None:
        """Join ``x`` onto the last block still in the outbox (or new ones): the copying happens
        here, on this thread, in pieces no larger than a block."""
        with self._cond:
            while self._backlog > self._max_backlog and not self.feed.aborted:
                self._cond.wait(0.5)
            items = self._items
            last = items[-1] if items else None
            done = last.add(x) if type(last) is Block else 0
            while done < len(x):
                block = Block(self._block)
                done += block.add(x[done:])
                items.append(block)
            self._backlog += len(x)
            schedule = self._loop is not None and not self._scheduled
            self._scheduled = True
        if schedule:
            self._schedule()

    def _send(self, item: Frame | object) -> None:
        with self._cond:
            self._items.append(item)
            schedule = self._loop is not None and not self._scheduled
            self._scheduled = True
        if schedule:
            self._schedule()

    def _schedule(self) -> None:
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._drain_some)
            except RuntimeError:  # the loop is closed: nobody will read what follows
                self.feed.abort()
