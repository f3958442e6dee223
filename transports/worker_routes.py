"""``asrhub serve --workers N``: a request reaches the session it names, whichever worker the
kernel handed its connection to.

The workers share the public port (SO_REUSEPORT): every new TCP connection goes to any of them.
A WebSocket carries its whole session on one connection, but an HTTP+SSE session's follow-up
requests (``/v1/sessions/{id}/audio``, ``/end``, ``/update``, ``/events``, ``DELETE``) and a
Socket.io long-polling client's requests (``/socket.io/?sid=…``) and a job's status
(``/v1/jobs/{id}``, without a cluster) may each come on a new connection — to another worker,
which does not have the session.

So each worker also listens on a private loopback port (its supervisor binds one per worker and
passes every port to every worker: :class:`Peers`), and names what it creates after itself: an
HTTP session id, an Engine.IO sid or a job id (without a cluster) ends in ``.w<index>``. A
request that names another worker's session is forwarded to that worker's private port by
:func:`middleware` — the body streamed through as it arrives, the response (an event stream
too) streamed back as it is written, a WebSocket upgrade (Socket.io's, from long-polling)
relayed message by message — and the owner answers it as if the client had come to it. No
Redis needed; the door admitted the client at the worker it reached (the owner's private port
does not count it again).

A request that names a worker that is gone (restarted: its sessions went with it) gets the
answer for an unknown session.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType, hdrs, web

from asrhub.logging import get_logger

from .common import HTTPHubError

log = get_logger("asrhub.transports")

FORWARDED = "X-Asrhub-Forwarded"
"""Set on a forwarded request (the worker that forwarded it): the owner never forwards again."""
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        hdrs.CONNECTION,
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
        hdrs.SEC_WEBSOCKET_KEY,
        hdrs.SEC_WEBSOCKET_VERSION,
        hdrs.SEC_WEBSOCKET_EXTENSIONS,
        hdrs.SEC_WEBSOCKET_ACCEPT,
        FORWARDED,
    )
)
CONNECT_TIMEOUT_S = 5.0
SESSIONS_PREFIX = "/v1/sessions/"
SOCKETIO_PREFIX = "/socket.io/"
JOBS_PREFIX = "/v1/jobs/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Peers:
    """This worker's place among its siblings."""

    index: int
    ports: tuple[int, ...]
    """The private loopback port of each worker, by index."""

    @property
    def suffix(self) -> str:
        return f".w{self.index}"

    def tagged(self, ident: str) -> str:
        """``ident`` named after this worker."""
        return ident + self.suffix

    def new_id(self) -> str:
        return self.tagged(secrets.token_urlsafe(12))

    def owner(self, ident: str) -> int | None:
        """The worker an id names (None: no worker's, or not a valid index)."""
        head, dot, tail = ident.rpartition(".w")
        if not dot or not head or not tail.isdigit():
            return None
        index = int(tail)
        return index if index < len(self.ports) else None


PEERS = web.AppKey("peers", Peers)
CLIENT: web.AppKey[aiohttp.ClientSession] = web.AppKey("worker_client")


def named_id(request: web.Request) -> str | None:
    """The session (or Engine.IO sid) a request names, if any."""
    path = request.path
    if path.startswith(SESSIONS_PREFIX):
        return path[len(SESSIONS_PREFIX) :].partition("/")[0] or None
    if path.startswith(SOCKETIO_PREFIX):
        return request.query.get("sid")
    if path.startswith(JOBS_PREFIX):  # a job without a cluster lives in the worker that took it
        return path[len(JOBS_PREFIX) :].partition("/")[0] or None
    return None


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    peers = request.app.get(PEERS)
    ident = named_id(request)
    if peers is None or ident is None or FORWARDED in request.headers:
        return await handler(request)
    owner = peers.owner(ident)
    if owner is None or owner == peers.index:
        return await handler(request)
    return await forward(request, peers, owner)


def _headers(headers: Mapping[str, str], index: int | None = None) -> dict[str, str]:
    kept = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
    if index is not None:
        kept[FORWARDED] = str(index)
    return kept


async def forward(request: web.Request, peers: Peers, owner: int) -> web.StreamResponse:
    """Answer ``request`` with what worker ``owner`` answers it."""
    url = f"http://127.0.0.1:{peers.ports[owner]}{request.rel_url}"
    client = request.app[CLIENT]
    headers = _headers(request.headers, peers.index)
    if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
        return await _forward_websocket(request, client, url, headers)
    data = request.content if request.body_exists else None
    try:
        async with client.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            response.headers.extend(_headers(upstream.headers).items())
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientConnectorError:
        raise _gone(request) from None


def _gone(request: web.Request) -> HTTPHubError:
    what = named_id(request)
    return HTTPHubError("bad_message", f"no session {what!r} (its worker is gone)", status=404)


async def _forward_websocket(
    request: web.Request, client: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> web.StreamResponse:
    try:
        upstream = await client.ws_connect(
            url.replace("http://", "ws://", 1), headers=headers, max_msg_size=0
        )
    except aiohttp.WSServerHandshakeError as exc:
        return web.Response(status=exc.status, text=exc.message)
    except aiohttp.ClientConnectorError:
        raise _gone(request) from None
    downstream = web.WebSocketResponse(max_msg_size=0)
    try:
        await downstream.prepare(request)
        await _relay(downstream, upstream)
    finally:
        await upstream.close()
    return downstream


async def _relay(downstream: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    async def pump(
        source: AsyncIterator[aiohttp.WSMessage],
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for msg in source:
            if msg.type is WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
        await sink.close()

    tasks = [
        asyncio.ensure_future(pump(downstream, upstream)),
        asyncio.ensure_future(pump(upstream, downstream)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)


def setup(app: web.Application, peers: Peers | None) -> None:
    """Forward requests for a sibling's sessions (nothing to do for a single process)."""
    if peers is None:
        return
    app[PEERS] = peers

    async def client(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)  # the door bounds the clients; each needs its own
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            app[CLIENT] = session
            yield

    app.cleanup_ctx.append(client)
