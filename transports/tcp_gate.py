"""The HTTP port's connections through the door's gate, before aiohttp sees a byte of them.

aiohttp starts a request handler for every accepted connection and waits for its first request
without a deadline, so a client that connects and sends nothing (or half a request head) would
hold a connection forever. :class:`GatedSite` serves the application like ``web.SockSite`` but
wraps each connection's protocol in a :class:`GatedProtocol`:

* admission: ``gate.enter(peer address)``; at a cap (``server.max_connections``,
  ``server.max_connections_per_address``) the connection gets a ``503`` with the contract's
  ``capacity`` error and is closed (at most :data:`MAX_REFUSING` such answers at once; past
  that, a flood is reset without an answer);
* the first request's head must arrive within ``limits.start_timeout_s`` (the door middleware
  calls :meth:`GatedProtocol.request_started`), else the connection is cut;
* a request body must keep arriving: no byte for ``limits.idle_timeout_s`` while the hub reads
  it (the middleware calls :meth:`GatedProtocol.expect_body`) and the connection is cut;
* the ticket goes back when the connection is lost, whatever ended it.

Later requests on a kept-alive connection are bounded by aiohttp's keep-alive timeout; a
WebSocket's or an event stream's life after its head by its protocol (heartbeats, its session's
idle clock, the start deadline of :mod:`~asrhub.transports.websocket` and the others).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web

from asrhub.door import Deadline, Door, Gate, Ticket
from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.protocol import encode_json

log = get_logger("asrhub.transports")

MAX_REFUSING = 64
"""Refused connections being answered at once; more are reset at once (a flood costs nothing)."""
REFUSE_WAIT_S = 1.0
"""How long a refused connection may take to send its request head before it is reset."""


def peer_address(transport: asyncio.BaseTransport | None) -> str | None:
    """The client's IP address (None: unknown or a Unix socket)."""
    peer = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return None


def refusal_bytes(error: HubError, status: int = 503, reason: str = "Service Unavailable") -> bytes:
    body = encode_json(error.to_event().to_dict())
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class GatedProtocol(asyncio.Protocol):
    """aiohttp's request handler for one connection, behind the door."""

    def __init__(self, inner: Any, door: Door, site: GatedSite) -> None:
        self._inner = inner
        self._door = door
        self._gate = site.gate
        self._site = site
        self._ticket: Ticket | None = None
        self._refused: HubError | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline = Deadline()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport; not an isinstance check: uvloop's implement asyncio.Transport's
        # methods without subclassing it
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        try:
            self._ticket = self._gate.enter(peer_address(transport), "http")
        except HubError as exc:
            self._refuse(transport, exc)
            return
        self._deadline.arm(self._door.start_timeout_s, self._cut)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            self._answer_refusal()
            return
        self._deadline.touch()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._refused is not None:
            return None
        result: bool | None = self._inner.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.disarm()
        ticket, self._ticket = self._ticket, None
        if self._refused is not None:
            self._site.refusing -= 1
            self._refused = None
            return
        if ticket is not None:
            ticket.leave()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._refused is None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._refused is None:
            self._inner.resume_writing()

    # ------------------------------------------------------------------ the door's deadlines

    def request_started(self) -> None:
        """A request head arrived: the first request's deadline is met."""
        self._deadline.disarm()

    def expect_body(self, idle_s: float) -> None:
        """A request body is being read: each byte must follow the last within ``idle_s``
        (time the hub itself stops reading, its flow control, does not count)."""
        transport = self._transport
        self._deadline.arm(
            idle_s, self._cut, hold=lambda: transport is not None and not transport.is_reading()
        )

    def body_done(self) -> None:
        self._deadline.disarm()

    def _cut(self) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            log.debug("connection cut: nothing in time", peer=peer_address(transport))
            transport.abort()

    # ------------------------------------------------------------------ refusal

    def _refuse(self, transport: asyncio.Transport, error: HubError) -> None:
        if self._site.refusing >= MAX_REFUSING:
            transport.abort()  # a flood: a reset costs nothing
            return
        self._site.refusing += 1
        self._refused = error
        self._deadline.arm(REFUSE_WAIT_S, transport.abort)

    def _answer_refusal(self) -> None:
        """The refused client's request head came: answer it (503) and close."""
        transport, error = self._transport, self._refused
        if transport is None or error is None or transport.is_closing():
            return
        self._deadline.disarm()
        transport.write(refusal_bytes(error))
        transport.close()


class GatedSite(web.SockSite):
    """``web.SockSite`` whose connections pass the door's gate (see the module doc)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        door: Door,
        *,
        gate: Gate | None = None,
        **kwargs: Any,
    ) -> None:
        """``gate``: another gate than the door's (the private port of ``--workers``, whose
        clients the forwarding worker admitted already, counts nothing: ``Gate()``)."""
        super().__init__(runner, sock, **kwargs)
        self.door = door
        self.gate = gate if gate is not None else door.gate
        self.refusing = 0

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        factory: Callable[[], asyncio.Protocol] = lambda: GatedProtocol(server(), self.door, self)  # noqa: E731
        self._server = await loop.create_server(
            factory, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )


def connection_of(request: web.Request) -> GatedProtocol | None:
    """The gated connection a request came on (None: served by a plain site)."""
    transport = request.transport
    protocol = transport.get_protocol() if transport is not None else None
    return protocol if isinstance(protocol, GatedProtocol) else None
