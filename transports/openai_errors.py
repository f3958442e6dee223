"""OpenAI's error shape, ``{"error": {"message", "type", "param", "code"}}`` with the hub's
contract code in ``code``: the refusal of every OpenAI-compatible route (``/v1/audio/…``,
``/v1/models``, ``/v1/realtime``'s handshake) and the ``error`` event of a streamed
transcription. The HTTP status comes from the door's one table."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web

from asrhub.errors import HubError

from .door import register_refusal, status_of

PREFIXES = ("/v1/audio/", "/v1/models", "/v1/realtime")
_TYPES = {
    401: "invalid_request_error",
    403: "invalid_request_error",
    429: "insufficient_quota",
    503: "server_error",
}


def openai_error(error: HubError, status: int | None = None) -> dict[str, Any]:
    status = status or status_of(error)
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": error.message, "type": kind, "param": None, "code": error.code}}


def refusal(_request: web.Request, error: HubError, status: int) -> web.StreamResponse:
    headers = {hdrs.WWW_AUTHENTICATE: "Bearer"} if status == 401 else None
    return web.json_response(openai_error(error, status), status=status, headers=headers)


def setup(app: web.Application) -> None:
    for prefix in PREFIXES:
        register_refusal(app, prefix, refusal)
