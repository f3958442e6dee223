"""The byte feed between the event loop and a decoder thread: a blocking, bounded file object."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

HEAD_BYTES, TAIL_BYTES = 8192, 65536


class ByteFeed:
    """A blocking, bounded, read-only file object (``read`` only: PyAV treats it as non-seekable).

    Besides bytes it carries *markers* (frames that passed through): ``read`` hands a marker to
    ``on_marker`` once the decoder has consumed every byte put before it.

    With ``stall_s``, ``read`` ends the stream (returns ``b""`` and sets :attr:`stalled`) once
    the decoder has produced no output (:meth:`produced`) for that long, whether bytes trickle
    in or none come: a decoder thread is a shared resource, not a place to park.
    """

    def __init__(
        self,
        limit: int,
        on_marker: Callable[[Any], None],
        on_room: Callable[[], None] | None = None,
        *,
        stall_s: float | None = None,
    ) -> None:
        self._on_room = on_room
        self._stall_s = stall_s
        self._output_at = time.monotonic()
        self.stalled = False
        self._over = False  # a forced put went past the bound: on_room once it has drained
        self._cond = threading.Condition()
        self._items: deque[Any] = deque()
        self._size = 0
        self._limit = limit
        self._on_marker = on_marker
        self._eof = self.aborted = self._closed = False
        self._head = b""
        self._tail: deque[bytes] = deque()
        self._tail_size = 0

    def put(self, data: bytes, *, force: bool = False) -> bool:
        """False when ``data`` would overflow the bound (nothing is queued then). With ``force``
        it is queued anyway and ``on_room`` is called (from the decoder thread) once the feed
        has drained to half the bound: the caller holds its writer back meanwhile."""
        with self._cond:
            if self._closed:
                return True  # the decoder has ended: nothing reads these bytes any more
            if self._size + len(data) > self._limit:
                if not force:
                    return False
                self._over = True
            self._items.append(data)
            self._size += len(data)
            self._cond.notify()
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._tail.append(data)
        self._tail_size += len(data)
        while self._tail_size - len(self._tail[0]) >= TAIL_BYTES:
            self._tail_size -= len(self._tail.popleft())
        return True

    def put_marker(self, item: Any) -> bool:
        """False once the decoder has ended (the caller then delivers ``item`` itself)."""
        with self._cond:
            if self._closed:
                return False
            self._items.append(_Marker(item))
            self._cond.notify()
            return True

    def finish(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self) -> None:
        with self._cond:
            self.aborted = True
            self._cond.notify()

    def close(self) -> list[Any]:
        """The decoder has ended: refuse further markers, return the ones it never reached."""
        with self._cond:
            self._closed = True
            left = [m.item for m in self._items if isinstance(m, _Marker)]
            self._items.clear()
            return left

    def produced(self) -> None:
        """The decoder made output: the stall clock starts again."""
        self._output_at = time.monotonic()

    def _stalled(self) -> bool:
        """(With the lock held.) True, once, when the stall clock has run out."""
        if self._stall_s is not None and time.monotonic() - self._output_at > self._stall_s:
            self.stalled = self.aborted = True
        return self.stalled

    def read(self, n: int = -1) -> bytes:
        while True:
            markers: list[Any] = []
            with self._cond:
                while not self._items and not self._eof and not self.aborted and not self._stalled():
                    if self._stall_s is None:
                        self._cond.wait()
                    else:
                        self._cond.wait(max(0.0, self._stall_s - (time.monotonic() - self._output_at)) + 0.01)
                if self.aborted or self._stalled():
                    return b""
                while self._items and isinstance(self._items[0], _Marker):
                    markers.append(self._items.popleft().item)
                if not markers:
                    if not self._items:
                        return b""  # end of stream
                    chunk: bytes = self._items.popleft()
                    if 0 < n < len(chunk):
                        chunk, rest = chunk[:n], chunk[n:]
                        self._items.appendleft(rest)
                    self._size -= len(chunk)
                    room = self._over and self._size <= self._limit // 2
                    self._over = self._over and not room
            if not markers:
                if room and self._on_room is not None:
                    self._on_room()  # outside the lock
                return chunk
            for item in markers:  # outside the lock: this may wait for the loop to drain
                self._on_marker(item)

    def head(self) -> bytes:
        return self._head

    def tail(self) -> bytes:
        return b"".join(self._tail)[-TAIL_BYTES:]


class _Marker:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item
