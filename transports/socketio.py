"""Socket.io at ``/socket.io/``: the streaming contract with Socket.io's events.

The client emits ``session.start`` / ``session.end`` / ``ping`` with the same JSON object as on
the WebSocket (a payload without ``type`` takes the event name) and ``audio`` with a binary
payload (a Socket.io binary attachment). The hub emits every message with its ``type`` as the
event name and the whole message as the payload. One session per Socket.io connection; the
connection is closed after ``session.closed``.

* Keys come from the connect ``auth`` (``{"token": KEY}``), the ``token`` query parameter or an
  ``Authorization: Bearer`` header; a refused connect reaches the client as ``connect_error``
  whose ``data`` is the contract's ``unauthorized`` error. A key on the Engine.IO handshake
  itself (parameter or header) is checked there too: a wrong one is a 401 before any socket
  exists.
* Admission (docs/security.md): an Engine.IO long-polling client counts as a connection of its
  address in the door's gate from its handshake to its end (a WebSocket client is its TCP
  connection already); at a cap the handshake gets a 503. Every client must connect with a
  valid key *and* open its session (``session.start`` / ``session.resume``) within
  ``limits.start_timeout_s`` of its handshake: else a fatal ``timeout`` error (once connected)
  and a disconnect.
* ``async_handlers=False``: each client's packets are handled in order, and the engine.io read
  loop awaits the handler, so ``session.feed``'s backpressure reaches the client's socket.
* Outbound, each emit waits until engine.io's writer has taken the packet (its per-socket queue
  is unbounded), so a client that stops reading fills our bounded queue and is closed with
  ``slow_consumer`` instead of growing engine.io's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import socketio
from aiohttp import web

from asrhub.door import Deadline, Ticket
from asrhub.errors import HubError
from asrhub.frames import Event
from asrhub.protocol import CLIENT_TYPES, event_payload
from asrhub.settings.schema import Settings

from .common import CONNECTIONS, HUB, SETTINGS, reset
from .door import DOOR, bearer_or_token, register_refusal
from .sio_packet import MALFORMED, SafePacket, quiet_client_protocol_errors
from .streaming import SEND_TIMEOUT_ON_CLOSE, StreamConnection
from .tcp_gate import peer_address
from .worker_routes import PEERS

PATH = "socket.io"
CLOSE_TIMEOUT = 2.0

SIO = web.AppKey("socketio", socketio.AsyncServer)
DROPPED = (
    socketio.AsyncServer.reason.TRANSPORT_CLOSE,
    socketio.AsyncServer.reason.TRANSPORT_ERROR,
    socketio.AsyncServer.reason.PING_TIMEOUT,
)
"""Disconnect reasons of a client that vanished (no DISCONNECT packet): resumable."""
POLLING_TICKET: web.RequestKey[Ticket] = web.RequestKey("socketio_polling_ticket")
"""The gate's ticket a long-polling handshake took (handed to its Engine.IO socket)."""
CLAIMED = web.RequestKey("socketio_ticket_claimed", bool)


@dataclass(eq=False)
class Admission:
    """One Engine.IO client at the door: its gate ticket (long-polling) and its start deadline."""

    ticket: Ticket | None
    deadline: Deadline

    def started(self) -> None:
        self.deadline.disarm()

    def release(self) -> None:
        self.deadline.disarm()
        if self.ticket is not None:
            self.ticket.leave()


def refusal(_request: web.Request, error: HubError, status: int) -> web.StreamResponse:
    """An HTTP refusal of an Engine.IO request, in Engine.IO's error shape (``message``), with
    the contract's error as ``data`` (what a refused connect carries)."""
    return web.json_response({"message": error.message, "data": error.to_event().to_dict()}, status=status)


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


def _hold_background_tasks(eio: Any) -> set[asyncio.Future[Any]]:
    """Engine.IO starts each heartbeat (`_send_ping`) with a bare `ensure_future` and keeps no
    reference, so the garbage collector may destroy a sleeping ping mid-flight ("Task was
    destroyed but it is pending!") and the client then misses its heartbeat. Hold every
    background task until it ends; the lifecycle cancels what is left at shutdown."""
    held: set[asyncio.Future[Any]] = set()
    start = eio.start_background_task

    def start_held(target: Any, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = start(target, *args, **kwargs)
        held.add(task)
        task.add_done_callback(held.discard)
        return task

    eio.start_background_task = start_held
    return held


def setup(app: web.Application) -> socketio.AsyncServer:
    hub, settings, door = app[HUB], app[SETTINGS], app[DOOR]
    manager = _cluster_manager(settings)
    sio = socketio.AsyncServer(
        client_manager=manager,
        async_mode="aiohttp",
        async_handlers=False,
        cors_allowed_origins=door.hosts.socketio_origins(),
        ping_interval=settings.server.heartbeat_s,
        max_http_buffer_size=2 * hub.limits.max_frame_bytes + 4096,
        logger=False,
        engineio_logger=False,
        serializer=SafePacket,  # a malformed packet is answered with bad_message, not a traceback
    )
    quiet_client_protocol_errors()
    background = _hold_background_tasks(sio.eio)
    peers = app.get(PEERS)
    if peers is not None:  # --workers: a long-polling client's sid names its worker
        generate_id = sio.eio.generate_id
        sio.eio.generate_id = lambda: peers.tagged(generate_id())  # type: ignore[method-assign]
    app[SIO] = sio
    conns: dict[str, StreamConnection] = {}
    admissions: dict[str, Admission] = {}  # by Engine.IO sid
    expiring: set[asyncio.Task[None]] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        """Engine.IO's endpoint, behind the door: a long-polling handshake takes a gate ticket
        (the door's middleware checked host, origin and any key it carries)."""
        handshake = request.method == "GET" and "sid" not in request.query
        polling = request.query.get("transport", "polling") == "polling"
        ticket = None
        if handshake and polling:
            ticket = door.gate.enter(peer_address(request.transport), "socketio")  # HubError: 503
            request[POLLING_TICKET] = ticket
        try:
            response: web.StreamResponse = await sio.handle_request(request)
            return response
        finally:
            if ticket is not None and not request.get(CLAIMED, False):
                ticket.leave()  # the handshake failed: no socket holds it

    for method in ("GET", "POST", "OPTIONS"):
        app.router.add_route(method, f"/{PATH}/", handle)
    register_refusal(app, f"/{PATH}/", refusal)

    inner_eio_connect = sio.eio.handlers["connect"]
    inner_eio_disconnect = sio.eio.handlers["disconnect"]

    async def eio_connect(eio_sid: str, environ: dict[str, Any]) -> Any:
        request = environ.get("aiohttp.request")
        ticket = request.get(POLLING_TICKET) if request is not None else None
        if request is not None and ticket is not None:
            request[CLAIMED] = True
        deadline = Deadline()
        deadline.arm(door.start_timeout_s, lambda: _spawn(expire(eio_sid)))
        admissions[eio_sid] = Admission(ticket, deadline)
        return await inner_eio_connect(eio_sid, environ)

    async def eio_disconnect(eio_sid: str, *args: Any) -> Any:
        admission = admissions.pop(eio_sid, None)
        if admission is not None:
            admission.release()
        return await inner_eio_disconnect(eio_sid, *args)

    sio.eio.on("connect", eio_connect)
    sio.eio.on("disconnect", eio_disconnect)

    def _spawn(coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        expiring.add(task)
        task.add_done_callback(expiring.discard)

    async def expire(eio_sid: str) -> None:
        """No connect with a valid key and no session within the start deadline."""
        limit = door.start_timeout_s
        sid = sio.manager.sid_from_eio_sid(eio_sid, "/")
        conn = conns.get(sid) if sid is not None else None
        if conn is not None:
            await conn.send_error(HubError("timeout", f"no session.start within {limit:g} s", fatal=True))
        elif eio_sid in sio.eio.sockets:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await sio.eio.disconnect(eio_sid)

    def started(sid: str, conn: StreamConnection) -> None:
        """A session opened on ``sid``: its start deadline is met."""
        if conn.session is None:
            return
        eio_sid = sio.manager.eio_sid_from_sid(sid, "/")
        admission = admissions.get(eio_sid) if eio_sid is not None else None
        if admission is not None:
            admission.started()

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
            key = door.identify(token or bearer_or_token(headers, _environ_query(environ)))
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
                started(sid, conn)

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

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        yield
        if sio.eio.sockets:  # connections that never started a session
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await sio.eio.disconnect()
        await sio.shutdown()
        for task in list(expiring) + list(background):
            task.cancel()
        for admission in admissions.values():
            admission.release()
        admissions.clear()
        listener = getattr(manager, "thread", None)
        if isinstance(listener, asyncio.Task):
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)
    return sio
