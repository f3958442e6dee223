"""The one aiohttp application of a hub process: every transport on one port, and the gRPC and
Wyoming listeners on their own.

``create_app(hub, settings)`` wires the transports to a hub built elsewhere (the composition
root: ``asrhub serve``, or a test). Every request passes the door's middleware
(:mod:`~asrhub.transports.door`); ``serve`` listens through :class:`~asrhub.transports.tcp_gate
.GatedSite`, so every connection passes its gate first. Lifecycle, in aiohttp's own order:

* start-up (``cleanup_ctx``, in order): ``hub.start()`` loads every provider's model, then
  Socket.io, then the gRPC and Wyoming listeners start (:mod:`~asrhub.transports.listeners`),
  all before the HTTP port opens (aiohttp runs start-up before any site listens);
* shutdown (SIGTERM/SIGINT, or ``runner.cleanup()``): aiohttp stops listening on the HTTP port,
  then ``on_shutdown`` runs :func:`graceful_shutdown`: ``hub.shutdown(grace)`` refuses new
  sessions on every protocol, hands each resumable session over to another node when there is
  a cluster (its connection delivers what was queued, then ``session.handover``, and closes;
  the hub waits until each is claimed elsewhere — :meth:`~asrhub.hub.Hub.hand_over`) and
  flushes every other open session (each utterance gets its final), the connections deliver
  those finals and ``session.closed`` and close; those that do not are closed all at once
  within one bound (:meth:`~asrhub.transports.common.Connections.drain`).
  aiohttp then cancels the handlers still running, and the ``cleanup_ctx`` generators end in
  reverse: the listeners close (their calls delivered), Socket.io, the hub releases its engines.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

from aiohttp import web

from asrhub.door import Door
from asrhub.hub import Hub
from asrhub.logging import get_logger
from asrhub.settings.schema import Settings

from . import (
    batch,
    deepgram,
    health,
    jobs,
    listeners,
    openai_api,
    openai_realtime,
    routing_table,
    socketio,
    sse,
    static,
    trace,
    usage,
    websocket,
    worker_routes,
)
from .common import CONNECTIONS, DELIVERY_GRACE_S, HUB, SETTINGS, Connections
from .door import DOOR, add_cors_headers, mark_prepared, middleware

log = get_logger("asrhub.server")


def create_app(
    hub: Hub,
    settings: Settings,
    *,
    web_dir: Path | None = None,
    wake_words: Callable[[], Iterable[str]] = tuple,
    reuse_port: bool = False,
    peers: worker_routes.Peers | None = None,
) -> web.Application:
    """The application; ``wake_words`` (the installed wake-word names, for Wyoming) and
    ``reuse_port`` (the workers of ``--workers N`` share every port) serve the listeners;
    ``peers``: this worker's siblings under ``--workers N`` (:mod:`~asrhub.transports.worker_routes`)."""
    routing = [worker_routes.middleware] if peers is not None else []
    app = web.Application(
        middlewares=[middleware, *routing],
        client_max_size=settings.server.max_upload_bytes + (1 << 20),
    )
    app[HUB] = hub
    app[SETTINGS] = settings
    app[DOOR] = Door.from_settings(settings)
    app[CONNECTIONS] = Connections()
    app.cleanup_ctx.append(_hub_lifecycle)
    app.on_shutdown.append(graceful_shutdown)
    app.on_response_prepare.append(mark_prepared)
    app.on_response_prepare.append(add_cors_headers)
    worker_routes.setup(app, peers)
    health.setup(app)
    usage.setup(app)
    routing_table.setup(app)
    websocket.setup(app)
    sse.setup(app)
    trace.setup(app)
    batch.setup(app)
    openai_api.setup(app)
    deepgram.setup(app)
    openai_realtime.setup(app)
    socketio.setup(app)
    jobs.setup(app)  # after the transports that register job runners
    listeners.setup(app, wake_words=wake_words, reuse_port=reuse_port)
    static.setup(app, web_dir)  # last: its catch-all route takes what no other transport did
    return app


async def _hub_lifecycle(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB]
    log.info("loading providers", providers=sorted(hub.providers))
    await hub.start()
    log.info("hub ready", default_provider=hub.default_provider)
    yield
    await hub.shutdown(0.0)  # at once after graceful_shutdown; else (a failed start-up) now


async def graceful_shutdown(app: web.Application) -> None:
    hub, settings = app[HUB], app[SETTINGS]
    grace = settings.server.shutdown_grace_s
    log.info("shutting down: handing over or flushing sessions", sessions=len(hub.sessions), grace_s=grace)
    await hub.shutdown(grace)
    log.info("sessions closed: draining connections", connections=len(app[CONNECTIONS]))
    await app[CONNECTIONS].drain(DELIVERY_GRACE_S)
    log.info("shutdown complete")
