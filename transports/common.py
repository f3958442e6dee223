"""What the transports of one aiohttp application share: app state keys and HTTP helpers.

App state lives under typed :class:`aiohttp.web.AppKey` s. Handlers raise
:class:`~asrhub.errors.HubError` (or :class:`HTTPHubError` for a status other than the code's
default); the door's middleware (:mod:`asrhub.transports.door`) turns it into the error response
of the endpoint's protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from asrhub.errors import HubError
from asrhub.hub import Hub
from asrhub.settings.schema import Settings

HUB = web.AppKey("hub", Hub)
SETTINGS = web.AppKey("settings", Settings)
CONNECTIONS: web.AppKey[Connections] = web.AppKey("connections")
KEY_ID: web.RequestKey[str | None] = web.RequestKey("key_id")
"""``request[KEY_ID]``: the identity of the API key that authenticated the request (or None)."""
UNAUTHORIZED = web.RequestKey("unauthorized", HubError)
"""Set on a WebSocket upgrade whose key was refused: the handler answers in-band."""
WEBSOCKET_ROUTES: web.AppKey[set[str]] = web.AppKey("websocket_routes")
"""The paths whose GET handler is a WebSocket endpoint (see :func:`add_websocket_route`)."""


def add_websocket_route(
    app: web.Application, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> None:
    """``GET path`` as a WebSocket endpoint: a refused key on a real upgrade handshake to it is
    answered in-band by the handler (an error message and a close code); anything else, and any
    other route, is refused over plain HTTP before the handler runs."""
    app.router.add_get(path, handler)
    app.setdefault(WEBSOCKET_ROUTES, set()).add(path)


def is_websocket_handshake(request: web.Request) -> bool:
    """A real WebSocket opening handshake (as aiohttp's own ``can_prepare`` judges it: GET,
    ``Connection: upgrade``, ``Upgrade: websocket``, version 13, a valid key) to a route
    registered with :func:`add_websocket_route`."""
    if request.method != "GET":  # aiohttp's can_prepare does not look at the method
        return False
    resource = request.match_info.route.resource
    if resource is None or resource.canonical not in request.app.get(WEBSOCKET_ROUTES, ()):
        return False
    return web.WebSocketResponse().can_prepare(request).ok


DELIVERY_GRACE_S = 5.0
"""After the shutdown's flush, how long connections get to hand their last events to their
clients."""
CLOSE_BOUND_S = 3.0
"""Then, how long closing every connection still open may take, all of them together (each
polite close has its own 2 s; whatever is still open after this is cut)."""


_LINGER_ZERO = struct.pack("ii", 1, 0)


def listening_sockets(
    host: str, port: int, *, receive_buffer: int = 0, reuse_port: bool = False
) -> list[socket.socket]:
    """Bound (not yet listening) sockets for ``host``/``port``, one per address it resolves
    to, for ``web.SockSite``.

    ``receive_buffer`` is set here, before ``listen``: every accepted connection inherits it
    and advertises a window that fits it from its first packet. Set on an accepted socket it
    would come too late — the window already promised cannot be taken back, and Linux
    autotuning overrides a ``TCP_WINDOW_CLAMP``.

    ``reuse_port``: SO_REUSEPORT, so that the N workers of ``asrhub serve --workers N`` each
    listen on the same port and the kernel spreads new connections over them."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    families = {info[0] for info in infos}
    sockets = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and len(families) > 1:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if receive_buffer:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]  # port 0: the free port picked first, for every address
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def discard_on_close(transport: asyncio.BaseTransport | None) -> None:
    """Make the socket's close a reset (SO_LINGER 0): whatever it still holds for the peer is
    discarded and the peer gets an RST at once.

    For a peer that no longer reads. A normal close would hand the unsent bytes to the kernel,
    which keeps the orphaned socket in FIN-WAIT-1 for minutes, and a peer that keeps sending
    into our closed, zero-window socket would wait just as long for an error. A no-op once the
    socket is closed."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # closed: uvloop's pseudo-socket says ValueError
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)


def reset(transport: asyncio.Transport | None) -> None:
    """Cut a connection at once with an RST (see :func:`discard_on_close`); a no-op on a
    closed one."""
    if transport is not None:
        discard_on_close(transport)
        transport.abort()


class ListenError(RuntimeError):
    """A listener cannot start (its port is in use, or the door forbids its address);
    ``asrhub serve`` prints it and exits 1."""


class HTTPHubError(HubError):
    """A :class:`HubError` answered with an explicit HTTP status."""

    def __init__(self, code: str, message: str, *, status: int, fatal: bool = False) -> None:
        super().__init__(code, message, fatal=fatal)
        self.status = status


class Connection(Protocol):
    """What the graceful shutdown needs of a live connection."""

    async def wait_finished(self) -> None: ...

    async def shutdown(self) -> None: ...


class Connections:
    """The live streaming connections (WebSocket, Socket.io, the compatible APIs), for the
    graceful shutdown."""

    def __init__(self) -> None:
        self._live: set[Connection] = set()

    def __len__(self) -> int:
        return len(self._live)

    def add(self, conn: Connection) -> None:
        self._live.add(conn)

    def discard(self, conn: Connection) -> None:
        self._live.discard(conn)

    async def drain(self, grace_s: float, close_s: float = CLOSE_BOUND_S) -> None:
        """Wait (at most ``grace_s``) for connections to deliver their last events, then close
        whatever is still open, all at once, within ``close_s`` together."""
        live = list(self._live)
        if live:
            waiting = [asyncio.ensure_future(c.wait_finished()) for c in live]
            await asyncio.wait(waiting, timeout=grace_s)
            for waiter in waiting:
                waiter.cancel()
        leftovers = list(self._live)
        if not leftovers:
            return
        closing = [asyncio.ensure_future(c.shutdown()) for c in leftovers]
        _done, late = await asyncio.wait(closing, timeout=close_s)
        for task in late:  # their sockets are cut by the closes' own deadlines
            task.cancel()
        if late:
            await asyncio.wait(late)


async def read_limited(request: web.Request, limit: int, what: str = "request body") -> bytes:
    """Read a whole body, refusing with ``too_large`` past ``limit`` bytes (before reading when
    the Content-Length already says so)."""
    length = request.content_length
    if length is not None and length > limit:
        raise HubError("too_large", f"{what} of {length} bytes exceeds the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise HubError("too_large", f"{what} exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
