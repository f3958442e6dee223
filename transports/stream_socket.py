"""The WebSocket every streaming endpoint uses (``/v1/stream``, Deepgram's ``/v1/listen``,
OpenAI's ``/v1/realtime``): aiohttp's, with a heartbeat that cuts a deaf client."""

from __future__ import annotations

import math

from aiohttp import web
from aiohttp.helpers import calculate_timeout_when

from .common import discard_on_close


class StreamSocket(web.WebSocketResponse):
    """aiohttp's WebSocket whose heartbeat failure cuts the connection with a reset, and whose
    heartbeat costs nothing per received chunk.

    A client that answers no ping is gone or deaf. aiohttp closes its socket politely, and the
    kernel then keeps trying to deliver what is still queued for it — for minutes if the client
    stopped reading — while a client that is still sending gets no error. A reset ends both at
    once.

    Heartbeat: any bytes from the client count as a sign of life (aiohttp's rule): the ping goes
    out one heartbeat after the client's latest bytes, and bytes after a ping stand for its pong.
    aiohttp applies the rule by scheduling a callback on every received chunk (a ``call_soon``
    and a timer reset: per audio frame, at 10 frames a second per session). Here a chunk only
    notes the loop time; the heartbeat's own timers read it when they fire and move the next
    ping to the same place aiohttp would have (one heartbeat after the latest bytes)."""

    _data_at = -math.inf  # loop time of the client's latest bytes
    _seen_at = -math.inf  # the latest bytes the heartbeat has accounted for

    def _handle_ping_pong_exception(self, exc: BaseException) -> None:
        if self._req is not None:
            discard_on_close(self._req.transport)
        super()._handle_ping_pong_exception(exc)

    def _on_data_received(self) -> None:
        loop = self._loop
        if loop is not None:
            self._data_at = loop.time()

    def _send_heartbeat(self) -> None:
        if self._data_at > self._seen_at:  # bytes came: no ping yet, one heartbeat after them
            self._rearm()
        else:
            super()._send_heartbeat()

    def _pong_not_received(self) -> None:
        if self._data_at > self._seen_at:  # bytes came after the ping: as good as its pong
            self._rearm()
        else:
            super()._pong_not_received()

    def _rearm(self) -> None:
        """Where aiohttp's per-chunk reset would have left the heartbeat after the latest bytes:
        no pong awaited, the next ping one heartbeat after them."""
        loop, heartbeat = self._loop, self._heartbeat
        if loop is None or heartbeat is None:
            return
        self._seen_at = self._data_at
        self._cancel_pong_response_cb()
        protocol = self._req.protocol if self._req is not None else None
        ceil_threshold = getattr(protocol, "_timeout_ceil_threshold", 5)
        self._heartbeat_when = calculate_timeout_when(self._data_at, heartbeat, ceil_threshold)
        self._heartbeat_cb = loop.call_at(self._heartbeat_when, self._send_heartbeat)
