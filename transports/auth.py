"""API keys, the browser-origin allow-list and the HTTP error middleware.

A key is presented as ``Authorization: Bearer KEY`` (or ``Token KEY``, Deepgram's form), as a
``token`` query parameter (browsers: WebSocket and EventSource cannot set headers), in
``Sec-WebSocket-Protocol`` (Deepgram's ``token, KEY``; OpenAI's ``openai-insecure-api-key.KEY``)
or, on Socket.io, as ``auth = {"token": KEY}``.
With no key configured every endpoint is open. With keys configured every endpoint but
``/healthz`` and the static UI needs one; a missing or wrong key is refused before any audio is
accepted: HTTP 401 on plain HTTP, an ``unauthorized`` error and close code 4401 on the WebSocket,
a refused connect (``connect_error``) on Socket.io.

Browser origins: a request carrying an ``Origin`` header is accepted when the origin is the
hub's own (same host and port), listed in ``server.allowed_origins``, or the list holds ``*``.
Non-browser clients send no ``Origin`` and are not affected.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.protocol import error_body, http_status, openai_error_body
from asrhub.settings.schema import ServerSettings

from . import deepgram
from .common import (
    AUTH,
    DEEPGRAM_PREFIX,
    KEY_ID,
    OPENAI_PREFIXES,
    UNAUTHORIZED,
    HTTPHubError,
    is_websocket_handshake,
)

log = get_logger("asrhub.transports")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {401: "unauthorized", 403: "unauthorized", 408: "timeout", 413: "too_large", 503: "capacity"}


def _fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _origin(value: str) -> str:
    parts = urlsplit(value.strip().lower())
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else value.strip().lower()


@dataclass(frozen=True)
class Auth:
    keys: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, server: ServerSettings) -> Auth:
        keys = tuple(k for k in (k.strip() for k in server.api_keys) if k)
        return cls(keys=keys, allowed_origins=tuple(_origin(o) for o in server.allowed_origins))

    @property
    def required(self) -> bool:
        return bool(self.keys)

    @property
    def any_origin(self) -> bool:
        return "*" in self.allowed_origins

    def identify(self, presented: str | None) -> str | None:
        """The identity of a valid key (for per-key limits), None when no key is configured.

        Raises ``unauthorized`` (fatal) for a missing or wrong key.
        """
        if not self.keys:
            return None
        if not presented:
            raise HubError(
                "unauthorized",
                "an API key is required: send 'Authorization: Bearer KEY' (or the 'token' "
                "query parameter, or Socket.io auth {token})",
                fatal=True,
            )
        given = presented.encode()
        found = None
        for key in self.keys:  # compare against every key: no early exit, no timing hint
            if hmac.compare_digest(key.encode(), given):
                found = key
        if found is None:
            raise HubError("unauthorized", "the API key is not valid", fatal=True)
        return _fingerprint(found)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any_origin:
            return True
        normalized = _origin(origin)
        if normalized in self.allowed_origins:
            return True
        return host is not None and urlsplit(normalized).netloc == host.lower()

    def socketio_origins(self) -> str | list[str] | None:
        """python-socketio's ``cors_allowed_origins``: None means same origin only."""
        if self.any_origin:
            return "*"
        return list(self.allowed_origins) or None


def bearer_or_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
    """The key a request presents: ``Authorization: Bearer`` (or Deepgram's ``Token``), a
    browser WebSocket's subprotocol form, else the ``token`` parameter."""
    header = headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return subprotocol_key(headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "")) or query.get("token") or None


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


def _is_protected(path: str) -> bool:
    return path.startswith("/v1/") or path == "/metrics"


def error_response(request: web.Request, error: HubError, status: int | None = None) -> web.Response:
    """The JSON error answer for ``request``'s endpoint family."""
    status = status or getattr(error, "status", None) or http_status(error.code)
    if request.path.startswith(DEEPGRAM_PREFIX):
        return deepgram.error_response(error, str(uuid.uuid4()))
    if request.path.startswith(OPENAI_PREFIXES):
        body = openai_error_body(error, status)
    else:
        body = error_body(error)
    headers = {hdrs.WWW_AUTHENTICATE: "Bearer"} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Origin and key checks for the protected endpoints; every error as a JSON body."""
    auth = request.app[AUTH]
    path = request.path
    if not _is_protected(path):
        return await handler(request)
    try:
        if not auth.origin_allowed(request.headers.get(hdrs.ORIGIN), request.host):
            origin = request.headers[hdrs.ORIGIN]
            raise HTTPHubError("unauthorized", f"origin {origin!r} is not allowed", status=403, fatal=True)
        if request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers:
            return web.Response(status=204)  # CORS preflight: headers added in on_response_prepare
        try:
            request[KEY_ID] = auth.identify(bearer_or_token(request.headers, request.query))
        except HubError as refused:
            if not is_websocket_handshake(request):
                raise
            request[KEY_ID] = None  # the WebSocket handler answers in-band (error + close 4401)
            request[UNAUTHORIZED] = refused
        return await handler(request)
    except HubError as exc:
        return error_response(request, exc)
    except ConnectionResetError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            raise  # not this client's connection: a real error, logged
        return web.Response(status=400)  # the client hung up mid-request: no traceback, nobody reads it
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "bad_message" if exc.status < 500 else "provider_failed")
        return error_response(request, HubError(code, exc.reason or exc.text or str(exc)), exc.status)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: CORS headers for an allowed cross-origin browser request."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or not _is_protected(request.path):
        return
    auth = request.app[AUTH]
    if not auth.origin_allowed(origin, request.host):
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = "*" if auth.any_origin else origin
    if not auth.any_origin:
        response.headers.add(hdrs.VARY, "Origin")
    if request.method == hdrs.METH_OPTIONS:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = "GET, POST, DELETE, OPTIONS"
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = request.headers.get(
            hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "Authorization, Content-Type"
        )
        response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = "600"


def keys_from(values: Iterable[str]) -> tuple[str, ...]:
    """Split comma-separated key lists (``ASRHUB_API_KEYS``) and drop blanks."""
    return tuple(k.strip() for v in values for k in v.split(",") if k.strip())
