"""Socket.io at ``/socket.io/``: the streaming contract with Socket.io's events.

The client emits ``session.start`` / ``session.end`` / ``ping`` with the same JSON object as on
the WebSocket (a payload without ``type`` takes the event name) and ``audio`` with a binary
payload (a Socket.io binary attachment). The hub emits every message with its ``type`` as the
event name and the whole message as the payload. One session per Socket.io connection; the
connection is closed after ``session.closed``.

* Keys come from the connect ``auth`` (``{"token": KEY}``), the ``token`` query parameter or an
  ``Authorization: Bearer`` header; a refused connect reaches the client as ``connect_error``
  whose ``data`` is the contract's ``unauthorized`` error.
* ``async_handlers=False``: each client's packets are handled in order, and the engine.io read
  loop awaits the handler, so ``session.feed``'s backpressure reaches the client's socket.
* Outbound, each emit waits until engine.io's writer has taken the packet (its per-socket queue
  is unbounded), so a client that stops reading fills our bounded queue and is closed with
  ``slow_consumer`` instead of growing engine.io's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import socketio
from aiohttp import web

from asrhub.errors import HubError
from asrhub.frames import Event
from asrhub.protocol import CLIENT_TYPES, event_payload
from asrhub.settings.schema import Settings

from .auth import bearer_or_token
from .common import AUTH, CONNECTIONS, HUB, SETTINGS, SHUTDOWN_HOOKS, reset
from .sio_packet import MALFORMED, SafePacket, quiet_client_protocol_errors
from .streaming import SEND_TIMEOUT_ON_CLOSE, StreamConnection

PATH = "socket.io"
CLOSE_TIMEOUT = 2.0

SIO = web.AppKey("socketio", socketio.AsyncServer)
DROPPED = (
    socketio.AsyncServer.reason.TRANSPORT_CLOSE,
    socketio.AsyncServer.reason.TRANSPORT_ERROR,
    socketio.AsyncServer.reason.PING_TIMEOUT,
)
"""Disconnect reasons of a client that vanished (no DISCONNECT packet): resumable."""


def _environ_query(environ: dict[str, Any]) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(environ.get("QUERY_STRING", "")))


def _cluster_manager(settings: Settings) -> socketio.AsyncManager | None:
    """With a cluster, python-socketio's Redis manager: an emit to a room or to a client on
    another node (``sio.emit`` in an application, or an external ``AsyncRedisManager(url,
    write_only=True)``) reaches it through Redis. The hub's own per-session emits stay local."""
    cluster = settings.cluster
    if not cluster.redis_url:
        return None
    return socketio.AsyncRedisManager(
        cluster.redis_url,
        channel=f"{cluster.key_prefix}:sio",
        redis_options={"socket_connect_timeout": cluster.redis_timeout_s},
    )


def setup(app: web.Application) -> socketio.AsyncServer:
    hub, settings, auth = app[HUB], app[SETTINGS], app[AUTH]
    manager = _cluster_manager(settings)
    sio = socketio.AsyncServer(
        client_manager=manager,
        async_mode="aiohttp",
        async_handlers=False,
        cors_allowed_origins=auth.socketio_origins(),
        ping_interval=settings.server.heartbeat_s,
        max_http_buffer_size=2 * hub.limits.max_frame_bytes + 4096,
        logger=False,
        engineio_logger=False,
        serializer=SafePacket,  # a malformed packet is answered with bad_message, not a traceback
    )
    quiet_client_protocol_errors()
    sio.attach(app, socketio_path=PATH)
    app[SIO] = sio
    conns: dict[str, StreamConnection] = {}

    async def drained(sid: str) -> None:
        """Wait until engine.io's writer took every queued packet of this client."""
        eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
        sock = sio.eio.sockets.get(eio_sid) if eio_sid else None
        queue = getattr(sock, "queue", None)
        if queue is not None and not getattr(sock, "closed", True):
            await queue.join()

    async def connect(sid: str, environ: dict[str, Any], auth_data: Any = None) -> None:
        token = auth_data.get("token") if isinstance(auth_data, dict) else None
        headers = {"Authorization": environ.get("HTTP_AUTHORIZATION", "")}
        try:
            key = auth.identify(token or bearer_or_token(headers, _environ_query(environ)))
        except HubError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_event().to_dict()) from None

        async def send(event: Event) -> None:
            # ignore_queue: the client is on this node; only emits to others go through Redis
            await sio.emit(event.type, event_payload(event), to=sid, ignore_queue=True)
            await drained(sid)

        async def close(_code: str | None) -> None:
            eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await sio.disconnect(sid)  # the Socket.io DISCONNECT packet
                    if eio_sid is not None:
                        await sio.eio.disconnect(eio_sid)  # and the engine.io connection under it
            except TimeoutError:  # the client reads nothing: cut its socket now
                abort_socket()
            else:  # engine.io waits for the client to hang up: give it a moment, no more
                asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, abort_socket)

        def abort_socket() -> None:
            """Cut the TCP connection of a WebSocket-transport client (a polling client's
            connection may carry other requests: it is left to engine.io's ping timeout)."""
            request = environ.get("aiohttp.request")
            if environ.get("HTTP_UPGRADE", "").lower() != "websocket" or request is None:
                return
            reset(request.transport)

        def abandon() -> None:  # it reads nothing: cut it within a deadline, whatever else happens
            asyncio.get_running_loop().call_later(SEND_TIMEOUT_ON_CLOSE + CLOSE_TIMEOUT, abort_socket)

        conn = StreamConnection(hub, transport="socketio", key=key, send=send, close=close, abandon=abandon)
        conns[sid] = conn
        app[CONNECTIONS].add(conn)

    async def disconnect(sid: str, reason: Any = None) -> None:
        conn = conns.pop(sid, None)
        if conn is not None:
            conn.release(dropped=reason in DROPPED)  # a dropped resumable session waits for session.resume
            app[CONNECTIONS].discard(conn)

    def control(event: str) -> Any:
        async def handler(sid: str, data: Any = None) -> None:
            conn = conns.get(sid)
            if conn is not None:
                await conn.handle_text(data, event=event)

        return handler

    async def audio(sid: str, data: Any = None) -> None:
        conn = conns.get(sid)
        if conn is None:
            return
        if not isinstance(data, bytes | bytearray | memoryview):
            what = type(data).__name__
            message = f"audio must be a binary attachment (bytes), not {what}; never base64"
            await conn.send_error(HubError("bad_message", message))
            return
        await conn.handle_audio(bytes(data))

    async def other(event: str, sid: str, *args: Any) -> None:
        conn = conns.get(sid)
        if conn is not None:
            await conn.handle_text(args[0] if args else None, event=event)

    sio.on("connect", connect)
    sio.on("disconnect", disconnect)
    for name in CLIENT_TYPES:
        sio.on(name, control(name))
    sio.on("audio", audio)
    sio.on("*", other)

    async def malformed(sid: str, why: Any = None) -> None:
        conn = conns.get(sid)
        if conn is not None:
            await conn.send_error(HubError("bad_message", f"malformed Socket.io packet: {why}"))

    sio.on(MALFORMED, malformed)

    async def shutdown() -> None:
        if sio.eio.sockets:  # connections that never started a session
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await sio.eio.disconnect()
        await sio.shutdown()
        listener = getattr(manager, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    app[SHUTDOWN_HOOKS].append(shutdown)
    return sio
