"""The one aiohttp application of a hub process: every transport on one port.

``create_app(hub, settings)`` wires the transports to a hub built elsewhere (the composition
root: ``asrhub serve``, or a test). Lifecycle:

* start-up (``cleanup_ctx``): ``hub.start()`` loads every provider's model before the port opens
  (aiohttp runs start-up before any site listens);
* shutdown (SIGTERM/SIGINT, or ``runner.cleanup()``): aiohttp first stops listening (no new
  connections), then ``on_shutdown`` runs :func:`graceful_shutdown`: ``hub.shutdown(grace)``
  refuses new sessions and flushes every open session (each utterance gets its final), the
  connections deliver those finals and ``session.closed`` to their clients and close, then the
  transports release what they hold; only then are in-flight handlers cancelled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from asrhub.hub import Hub
from asrhub.logging import get_logger
from asrhub.settings.schema import Settings

from . import batch, deepgram, health, openai_api, openai_realtime, socketio, sse, static, websocket
from .auth import Auth, add_cors_headers, middleware
from .common import AUTH, CONNECTIONS, HUB, SETTINGS, SHUTDOWN_HOOKS, Connections

log = get_logger("asrhub.server")

DELIVERY_GRACE_S = 5.0
"""After the flush, how long connections get to hand their last events to their clients."""

STOPPED = web.AppKey("stopped", list)


def create_app(hub: Hub, settings: Settings, *, web_dir: Path | None = None) -> web.Application:
    app = web.Application(
        middlewares=[middleware],
        client_max_size=settings.server.max_upload_bytes + (1 << 20),
    )
    app[HUB] = hub
    app[SETTINGS] = settings
    app[AUTH] = Auth.from_settings(settings.server)
    app[CONNECTIONS] = Connections()
    app[SHUTDOWN_HOOKS] = []
    app[STOPPED] = []
    app.cleanup_ctx.append(_hub_lifecycle)
    app.on_shutdown.append(graceful_shutdown)
    app.on_response_prepare.append(add_cors_headers)
    health.setup(app)
    websocket.setup(app)
    sse.setup(app)
    batch.setup(app)
    openai_api.setup(app)
    deepgram.setup(app)
    openai_realtime.setup(app)
    socketio.setup(app)
    static.setup(app, web_dir)  # last: its catch-all route takes what no other transport did
    return app


async def _hub_lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    log.info("loading providers", providers=sorted(hub.providers))
    await hub.start()
    log.info("hub ready", default_provider=hub.default_provider)
    yield
    if not app[STOPPED]:  # shutdown did not run (start-up of another part failed)
        app[STOPPED].append(True)
        await hub.shutdown(0.0)


async def graceful_shutdown(app: web.Application) -> None:
    if app[STOPPED]:
        return
    app[STOPPED].append(True)
    hub, settings = app[HUB], app[SETTINGS]
    grace = settings.server.shutdown_grace_s
    log.info("shutting down: flushing sessions", sessions=len(hub.sessions), grace_s=grace)
    await hub.shutdown(grace)
    await app[CONNECTIONS].drain(DELIVERY_GRACE_S)
    for hook in app[SHUTDOWN_HOOKS]:
        await hook()
    log.info("shutdown complete")
