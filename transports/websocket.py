"""``GET /v1/stream``: the streaming contract over one WebSocket.

JSON control messages travel as text frames, audio as binary frames. The socket loop reads a
frame, hands it to the :class:`~asrhub.transports.streaming.StreamConnection` and awaits it
before reading the next (so ``session.feed``'s backpressure reaches the client's TCP stream),
and releases the session in ``finally`` on any disconnect. aiohttp's heartbeat pings the client
every ``server.heartbeat_s``.

A connection must open its session (``session.start`` or ``session.resume``) within
``limits.start_timeout_s`` of its upgrade — pings do not count — or it gets a fatal ``timeout``
error and close 4408.

Close codes: 1000 after ``session.closed``; 1001 hub shutdown; 1008 policy (``slow_consumer``,
fatal ``bad_message``); 1009 frame over twice the frame limit; 1011 engine failure; 1013
``capacity``; 4401 ``unauthorized``; 4408 idle or start ``timeout``; 4409 the session was
resumed on another connection (extension); 1012 the hub drains and handed the session over
(after ``session.handover``: resume it on another node; extension).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from aiohttp import WSCloseCode, WSMsgType, web

from asrhub.errors import HubError
from asrhub.frames import Event
from asrhub.protocol import encode_event

from .common import (
    CONNECTIONS,
    HUB,
    KEY_ID,
    SETTINGS,
    UNAUTHORIZED,
    add_websocket_route,
    discard_on_close,
    reset,
)
from .door import DOOR
from .stream_socket import StreamSocket
from .streaming import SEND_TIMEOUT_ON_CLOSE, StreamConnection

PATH = "/v1/stream"

CLOSE_CODES: dict[str | None, int] = {
    None: WSCloseCode.OK,
    "shutdown": WSCloseCode.GOING_AWAY,
    "slow_consumer": WSCloseCode.POLICY_VIOLATION,
    "bad_message": WSCloseCode.POLICY_VIOLATION,
    "too_large": WSCloseCode.MESSAGE_TOO_BIG,
    "provider_failed": WSCloseCode.INTERNAL_ERROR,
    "internal_error": WSCloseCode.INTERNAL_ERROR,
    "capacity": WSCloseCode.TRY_AGAIN_LATER,
    "quota_exceeded": 4429,
    "resumed": 4409,
    "handover": WSCloseCode.SERVICE_RESTART,
    "unauthorized": 4401,
    "timeout": 4408,
}
CLOSE_TIMEOUT = 2.0
SEND_BUFFER = 64 * 1024
"""Kernel send buffer of a streaming socket: hub → client traffic is small JSON events."""
OUTBOUND_BUFFER = 16 * 1024
"""Unsent bytes a socket may hold before a send waits for it to drain (a few hundred events)."""


async def handle(request: web.Request) -> web.StreamResponse:
    hub, settings = request.app[HUB], request.app[SETTINGS]
    limit = hub.limits.max_frame_bytes
    ws = StreamSocket(
        heartbeat=settings.server.heartbeat_s,
        max_msg_size=2 * limit,  # frames up to 2x the limit get a `too_large` error, larger a 1009
        timeout=CLOSE_TIMEOUT,
        compress=False,  # small JSON messages; a deflate context per socket costs more than it saves
        writer_limit=OUTBOUND_BUFFER,
    )
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(reason="expected a WebSocket upgrade")
    await ws.prepare(request)
    tcp = request.transport  # kept: aiohttp forgets it once a close has begun
    _bound_socket_buffers(request)

    async def send(event: Event) -> None:
        await ws.send_str(encode_event(event))

    async def close(code: str | None) -> None:
        reason = (code or "session closed").encode()
        ws_code = CLOSE_CODES.get(code, WSCloseCode.POLICY_VIOLATION)
        if tcp is None:
            return
        # A client that reads nothing would keep a gracefully closing socket (and its unsent
        # buffer) forever: whatever happens, the socket is gone CLOSE_TIMEOUT from now.
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, reset, tcp)
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(ws.close(code=ws_code, message=reason), CLOSE_TIMEOUT)

    def abandon() -> None:  # it reads nothing: its close will be a reset, within a deadline
        discard_on_close(tcp)
        asyncio.get_running_loop().call_later(SEND_TIMEOUT_ON_CLOSE + CLOSE_TIMEOUT, reset, tcp)

    conn = StreamConnection(
        hub, transport="websocket", key=request.get(KEY_ID), send=send, close=close, abandon=abandon
    )
    refused = request.get(UNAUTHORIZED)
    if refused is not None:
        await conn.send_error(refused)  # error `unauthorized` + close 4401, before any audio
        conn.release()
        return ws
    connections = request.app[CONNECTIONS]
    connections.add(conn)
    dropped = True  # until the client says goodbye with a close frame
    start_s = request.app[DOOR].start_timeout_s
    start_by: float | None = asyncio.get_running_loop().time() + start_s  # None once a session opened
    try:
        while True:
            if start_by is not None and conn.session is not None:
                start_by = None
            try:
                async with asyncio.timeout_at(start_by):  # not receive(timeout): pongs would restart it
                    msg = await ws.receive()
            except TimeoutError:
                dropped = False
                await conn.send_error(
                    HubError("timeout", f"no session.start within {start_s:g} s", fatal=True)
                )
                break
            if msg.type is WSMsgType.BINARY:
                await conn.handle_audio(msg.data)
            elif msg.type is WSMsgType.TEXT:
                await conn.handle_text(msg.data)
            else:  # CLOSE: the client's close frame; CLOSED: EOF/reset; ERROR: heartbeat, bad frame
                dropped = msg.type is not WSMsgType.CLOSE
                break
    except ConnectionError:
        pass
    finally:
        conn.release(dropped=dropped)  # a dropped resumable session waits for session.resume
        connections.discard(conn)
    return ws


def _bound_socket_buffers(request: web.Request) -> None:
    """Small outbound buffers around the session's bounded queue.

    Linux autotunes socket buffers up to megabytes. A capped send buffer and
    ``OUTBOUND_BUFFER`` unsent bytes in the process make a send wait early, so the EventQueue —
    which sheds partials first and reports ``slow_consumer`` — is where a slow reader's backlog
    sits, not the kernel. (Inbound, the receive buffer is set on the listening socket:
    ``server.receive_buffer_bytes``, see :func:`~asrhub.transports.common.listening_sockets`.)
    """
    transport = request.transport
    if transport is None:
        return
    transport.set_write_buffer_limits(high=OUTBOUND_BUFFER)
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):  # closed: uvloop's pseudo-socket says ValueError
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def setup(app: web.Application) -> None:
    add_websocket_route(app, PATH, handle)
