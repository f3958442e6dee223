"""``GET /v1/routing``: the routing table of ``provider: "auto"`` with live figures — per
language the engines in order, per engine its circuit state, moving time per audio second and
calls in flight (:meth:`asrhub.routing.router.Router.table`). ``asrhub providers --url`` prints
it. Under ``--workers N`` each worker routes with its own figures: the answer is the figures of
the worker that took the request (``pid`` says which).
See docs/routing.md."""

from __future__ import annotations

import os

from aiohttp import web

from .common import HUB

PATH = "/v1/routing"


async def routing_table(request: web.Request) -> web.Response:
    router = request.app[HUB].router
    if router is None:
        return web.json_response(
            {"error": {"code": "not_found", "message": "this hub has no router"}}, status=404
        )
    return web.json_response({**router.table(), "pid": os.getpid()})


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, routing_table)
