"""The door of the HTTP port: one middleware every request passes, and one table of refusals.

Before a handler runs (and so before any body is read):

1. the connection was admitted at TCP level (:mod:`~asrhub.transports.tcp_gate`: connection caps,
   the first request's deadline); this request's head arrived, which ends that deadline;
2. ``Host`` must be one the hub answers to (every route, the static UI and Socket.io included:
   DNS rebinding, :mod:`asrhub.door.hosts`) — else 403;
3. on the protected routes (``/v1/…``, ``/metrics``): a browser ``Origin`` must be allowed (403;
   CORS preflights are answered here) and the key valid (401). A refused key on a real
   WebSocket handshake to a WebSocket route is left to its handler, which says so in its own
   protocol (:func:`~asrhub.transports.common.is_websocket_handshake`);
4. on ``/socket.io/``: a key presented on the Engine.IO handshake (``token`` parameter or
   ``Authorization``) must be valid (401); Socket.io's own carrier, the connect packet's
   ``auth``, is checked on connect (:mod:`~asrhub.transports.socketio`);
5. a request body must keep arriving: ``limits.idle_timeout_s`` without a byte (while the hub
   is reading) and the connection is cut;
6. usage (:mod:`asrhub.usage`): the request counts against its key (``GET /v1/usage`` and
   ``/metrics`` excepted), the key's identity is the request's :data:`~asrhub.usage.CALLER`
   (an upload's engine calls count their audio against it), and a key that has used its daily
   audio quota is refused ``quota_exceeded`` (429) on every ``POST`` but a session's ``/end``
   — before the body is read. Its WebSocket handshakes are left to their handlers, whose
   session open refuses in their own protocol.

Refusals and handler errors (:class:`~asrhub.errors.HubError`, ``web.HTTPException`` ≥ 400)
become each protocol's own error response from the :class:`Refusals` table: a transport
registers how its routes say no (OpenAI's ``{"error": …}``, Deepgram's ``err_code``…);
everything else gets the native body, the contract's ``error`` event. Any other exception is a
bug: logged with its traceback and answered ``internal_error`` (500) the same way, unless the
response had already begun. This module imports no transport: the table is filled by each
one's ``setup``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import hdrs, web

from asrhub.door import Door
from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.telemetry import incoming
from asrhub.usage import CALLER

from .common import HUB, KEY_ID, UNAUTHORIZED, HTTPHubError, is_websocket_handshake
from .tcp_gate import connection_of

log = get_logger("asrhub.transports")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Render = Callable[[web.Request, HubError, int], web.StreamResponse]
"""How one protocol answers a refused request: (request, error, HTTP status) → response."""

DOOR = web.AppKey("door", Door)
PREPARED = web.RequestKey("prepared", bool)
"""Set on a request whose response headers were sent (no error response can follow)."""

HTTP_STATUS: dict[str, int] = {
    "bad_message": 400,
    "bad_audio": 400,
    "unknown_provider": 400,
    "unauthorized": 401,
    "timeout": 408,
    "too_large": 413,
    "quota_exceeded": 429,
    "internal_error": 500,
    "provider_failed": 502,
    "capacity": 503,
    "slow_consumer": 503,
}
"""The HTTP status of each error code on every HTTP route (unlisted: 500). A few answers carry
another status with a contract code (an :class:`~asrhub.transports.common.HTTPHubError`): an
unknown session 404 ``bad_message``, a second event-stream subscriber 409, a refused browser
origin or ``Host`` 403 ``unauthorized``; a protocol's refusal may map a code to its own status
(Deepgram: ``capacity`` is 429)."""
CODE_OF_STATUS = {401: "unauthorized", 403: "unauthorized", 408: "timeout", 413: "too_large", 503: "capacity"}
UNMETERED = frozenset({"/v1/usage", "/metrics"})
"""Protected paths whose requests are not counted as a key's usage (reading it)."""
"""aiohttp's own HTTP errors (a body over ``client_max_size``: 413) as contract codes."""
SOCKETIO_PREFIX = "/socket.io/"


def status_of(error: HubError) -> int:
    status = getattr(error, "status", None)
    return status if isinstance(status, int) else HTTP_STATUS.get(error.code, 500)


def native_refusal(_request: web.Request, error: HubError, status: int) -> web.StreamResponse:
    """The hub's own error body: the contract's ``error`` event."""
    headers = {hdrs.WWW_AUTHENTICATE: "Bearer"} if status == 401 else None
    return web.json_response(error.to_event().to_dict(), status=status, headers=headers)


class Refusals:
    """Route prefix → how that protocol refuses over HTTP (the longest matching prefix wins;
    no match: :func:`native_refusal`)."""

    def __init__(self) -> None:
        self._table: list[tuple[str, Render]] = []

    def register(self, prefix: str, render: Render) -> None:
        self._table.append((prefix, render))
        self._table.sort(key=lambda entry: -len(entry[0]))

    def render(self, request: web.Request, error: HubError, status: int | None = None) -> web.StreamResponse:
        status = status or status_of(error)
        for prefix, render in self._table:
            if request.path.startswith(prefix):
                return render(request, error, status)
        return native_refusal(request, error, status)


REFUSALS = web.AppKey("refusals", Refusals)


def register_refusal(app: web.Application, prefix: str, render: Render) -> None:
    """``setup`` of a transport: requests under ``prefix`` are refused with ``render``."""
    app.setdefault(REFUSALS, Refusals()).register(prefix, render)


def refuse(request: web.Request, error: HubError, status: int | None = None) -> web.StreamResponse:
    """``error`` as the response of ``request``'s protocol."""
    refusals = request.app.get(REFUSALS)
    if refusals is None:
        return native_refusal(request, error, status or status_of(error))
    return refusals.render(request, error, status)


# --------------------------------------------------------------------------- carriers


OPENAI_KEY_PROTOCOL = "openai-insecure-api-key."


def subprotocol_key(header: str) -> str | None:
    """A key in ``Sec-WebSocket-Protocol`` (browsers cannot set headers on a WebSocket):
    Deepgram's ``token, KEY`` (or ``bearer, KEY``), OpenAI's ``openai-insecure-api-key.KEY``."""
    protocols = [p.strip() for p in header.split(",") if p.strip()]
    for protocol in protocols:
        if protocol.startswith(OPENAI_KEY_PROTOCOL):
            return protocol[len(OPENAI_KEY_PROTOCOL) :] or None
    if len(protocols) >= 2 and protocols[0].lower() in ("token", "bearer"):
        return protocols[1]
    return None


def bearer_or_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a request presents: ``Authorization: Bearer`` (or Deepgram's ``Token``), a
    browser WebSocket's subprotocol form, else the ``token`` query parameter."""
    header = headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return subprotocol_key(headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")) or query.get("token") or None


def is_protected(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


# --------------------------------------------------------------------------- the middleware


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    door = request.app[DOOR]
    connection = connection_of(request)
    if connection is not None:
        connection.request_started()
    path = request.path
    host = request.headers.get(hdrs.HOST)
    if not door.hosts.host_allowed(host):
        message = f"this hub does not answer to the host {host!r} (server.allowed_hosts)"
        return refuse(request, HTTPHubError("unauthorized", message, status=403, fatal=True))
    socketio = path.startswith(SOCKETIO_PREFIX)
    if not (socketio or is_protected(path)):
        return await handler(request)
    try:
        if is_protected(path):
            _admit(request, door)
            _meter(request)
        else:  # Engine.IO handshake: a key it carries must be valid; else the connect's auth
            presented = bearer_or_token(request.headers, request.query)
            if presented is not None:
                request[KEY_ID] = door.identify(presented)
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            return web.Response(status=204)  # CORS preflight: headers added in on_response_prepare
        if connection is not None and request.body_exists and not is_websocket_handshake(request):
            connection.expect_body(door.idle_timeout_s)
            request.content.on_eof(connection.body_done)
        try:
            with incoming(request.headers):  # a client's traceparent parents its session's span
                return await handler(request)
        finally:
            if connection is not None:
                connection.body_done()
    except HubError as exc:
        return refuse(request, exc)
    except ConnectionResetError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            raise  # not this client's connection: a real error, logged
        return web.Response(status=400)  # the client hung up mid-request: no traceback, nobody reads it
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = CODE_OF_STATUS.get(exc.status, "bad_message" if exc.status < 500 else "provider_failed")
        return refuse(request, HubError(code, exc.reason or exc.text or str(exc)), exc.status)
    except Exception as exc:  # a bug: logged with its traceback, answered in the protocol's shape
        if request.get(PREPARED):
            raise  # a streamed answer already began: aiohttp ends the connection
        log.error("request failed", method=request.method, path=path, error=type(exc).__name__, exc_info=True)
        message = f"the hub failed on this request ({type(exc).__name__}); the hub's log has the details"
        return refuse(request, HubError("internal_error", message))


def _admit(request: web.Request, door: Door) -> None:
    """Origin and key of a protected route (raises the refusal)."""
    if not door.hosts.origin_allowed(request.headers.get(hdrs.ORIGIN), request.host):
        origin = request.headers[hdrs.ORIGIN]
        raise HTTPHubError("unauthorized", f"origin {origin!r} is not allowed", status=403, fatal=True)
    if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
        return
    try:
        request[KEY_ID] = door.identify(bearer_or_token(request.headers, request.query))
    except HubError as refused:
        if not is_websocket_handshake(request):
            raise
        request[KEY_ID] = None  # the WebSocket handler answers in-band, in its protocol
        request[UNAUTHORIZED] = refused


def _meter(request: web.Request) -> None:
    """Count an admitted request against its key; refuse an upload or a new HTTP session of a
    key past its daily audio quota (raises the refusal)."""
    if UNAUTHORIZED in request or request.method == hdrs.METH_OPTIONS:
        return
    hub = request.app.get(HUB)
    if hub is None:
        return
    key = request.get(KEY_ID)
    CALLER.set(key)
    if request.path in UNMETERED:
        return
    hub.usage.request(key)
    if request.method == hdrs.METH_POST and not request.path.endswith("/end"):
        hub.usage.check(key)


async def mark_prepared(request: web.Request, _response: web.StreamResponse) -> None:
    """``on_response_prepare``: the request's answer has begun (:data:`PREPARED`)."""
    request[PREPARED] = True


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers for an allowed cross-origin browser request."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or not is_protected(request.path):
        return
    hosts = request.app[DOOR].hosts
    if not hosts.origin_allowed(origin, request.host) or hdrs.ACCESS_CONTROL_ALLOW_ORIGIN in response.headers:
        return  # refused, or already answered (a response another worker wrote)
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if hosts.any_origin else origin
    if not hosts.any_origin:
        response.headers.add(hdrs.VARY, "Origin")
    if request.method == hdrs.METH_OPTIONS:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "GET, POST, DELETE, OPTIONS"
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = request.headers.get(
            hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "Authorization, Content-Type"
        )
        response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"
