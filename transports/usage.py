"""``GET /v1/usage``: the calling key's own usage — today's (UTC) audio seconds, sessions and
requests, its quota and what remains, its all-time counts (every node's, with a cluster).

Only the key that asks is shown: the identity comes from the key the request carried (the
door checked it), never from a parameter, so no key can read another's. On a hub without keys
it shows the ``anonymous`` count. Reading it is not counted as a request. See
:mod:`asrhub.usage` and docs/protocol.md."""

from __future__ import annotations

from aiohttp import web

from .common import HUB, KEY_ID

PATH = "/v1/usage"


async def usage(request: web.Request) -> web.Response:
    return web.json_response(await request.app[HUB].usage.report(request.get(KEY_ID)))


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, usage)
