"""``GET /healthz`` (liveness, open to all) and ``GET /metrics`` (Prometheus text format)."""

from __future__ import annotations

from aiohttp import web

from asrhub import metrics

from .common import CONNECTIONS, HUB


async def healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response(
        {
            "status": "ok" if hub.accepting else "draining",
            "sessions": len(hub.sessions),
            "connections": len(request.app[CONNECTIONS]),
            "providers": sorted(hub.providers),
            "default_provider": hub.default_provider,
        }
    )


async def metrics_handler(_request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
