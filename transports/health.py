"""``GET /healthz`` (liveness, open to all) and ``GET /metrics`` (Prometheus text format).

``/healthz`` answers 200 ``"ok"`` while the hub accepts sessions and 503 ``"draining"`` once a
graceful shutdown began, so a load balancer's health check takes the node out of rotation; it
reads a few attributes of this process only (cheap), ``pid`` names the worker that answered."""

from __future__ import annotations

import os

from aiohttp import web

from .common import CONNECTIONS, HUB


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response(
        {
            "status": "ok" if hub.accepting else "draining",
            "pid": os.getpid(),
            "sessions": len(hub.sessions),
            "connections": len(request.app[CONNECTIONS]),
            "providers": sorted(hub.providers),
            "default_provider": hub.default_provider,
        },
        status=200 if hub.accepting else 503,
    )


async def metrics_handler(request: web.Request) -> web.Response:
    """The metrics of the app's hub (of every worker of the machine under ``--workers``), in
    the format the scraper's ``Accept`` asks for: OpenMetrics for Prometheus (which asks for it
    first), the text format 0.0.4 otherwise."""
    body, content_type = request.app[HUB].metrics.render(request.headers.get("Accept"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
