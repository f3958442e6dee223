"""``GET /v1/sessions/{id}/trace``: a recorded session's trace file (docs/trace.md).

Only the key that recorded the session reads its trace: the identity comes from the key the
request carried (the door checked it), so a trace of another key answers exactly as a missing
one does — 404 — and no key can learn that another's session was recorded. A hub that records
no traces answers 404 too."""

from __future__ import annotations

from aiohttp import web

from .common import HUB, KEY_ID, HTTPHubError

PATH = "/v1/sessions/{session_id}/trace"


async def trace(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    tracing = request.app[HUB].tracing
    data = await tracing.read(session_id, request.get(KEY_ID)) if tracing is not None else None
    if data is None:
        raise HTTPHubError("bad_message", f"no trace of session {session_id!r}", status=404)
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{session_id}.trace"'},
    )


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, trace)
