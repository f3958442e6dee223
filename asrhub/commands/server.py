"""The single-process server behind ``asrhub serve``: the hub, its aiohttp app, the gRPC and
Wyoming listeners, graceful shutdown. ``asrhub serve`` (:mod:`asrhub.commands.serve`) runs it in
its own process, or in each worker of ``--workers N`` (:mod:`asrhub.commands.workers`); neither
of those two imports the other.

A composition point: it reaches the transports (the app, the listeners) and the wake-word model
folder, as :mod:`asrhub.wiring` reaches the operators.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
from collections.abc import Callable

from aiohttp import web

from asrhub.commands.event_loop import loop_name
from asrhub.logging import get_logger
from asrhub.settings.schema import Settings

log = get_logger("asrhub.server")


GC_GEN0_THRESHOLD = 10_000
"""Container allocations between young collections (CPython's default: 700). A session is a few
hundred small objects; 1,000 opens at the default ran ~150 collections and a full one that
stopped the loop for 60-70 ms (docs/benchmarks.md)."""


def tune_gc() -> None:
    """After start-up: freeze what is loaded (modules, models, the app) out of every future
    collection, and collect the young generation less often. For the server process only."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    gc_tuning: bool = False,
    reuse_port: bool = False,
    announce: bool = True,
    on_ready: Callable[[], None] | None = None,
    multiprocess: bool = False,
    worker: tuple[int, tuple[int, ...]] | None = None,
    private: socket.socket | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully. ``gc_tuning``: :func:`tune_gc` once
    the models are loaded (the CLI's process; not for a hub embedded in someone else's).
    ``reuse_port``, ``announce`` and ``on_ready`` serve the workers of ``--workers N``
    (:mod:`asrhub.commands.workers`): they share the port, and their supervisor announces it;
    ``multiprocess``: the hub's metrics go to the machine-wide export (one hub per worker);
    ``worker`` and ``private``: this worker's index and every worker's private loopback port,
    and its own private socket, where its siblings forward the requests for its sessions
    (:mod:`asrhub.transports.worker_routes`)."""
    from asrhub.door import Gate, is_loopback
    from asrhub.operators import wakeword_models
    from asrhub.telemetry import install, shutdown
    from asrhub.transports.app import create_app
    from asrhub.transports.common import listening_sockets
    from asrhub.transports.door import DOOR
    from asrhub.transports.listeners import LISTENING
    from asrhub.transports.tcp_gate import GatedSite
    from asrhub.transports.worker_routes import Peers
    from asrhub.wiring import build_hub

    install(settings.telemetry)  # before the hub: a Ray replica it starts traces as it does
    hub = build_hub(settings)
    if multiprocess:
        hub.metrics.enable_multiprocess()
    peers = Peers(*worker) if worker is not None else None
    app = create_app(
        hub, settings, wake_words=lambda: wakeword_models.available(), reuse_port=reuse_port, peers=peers
    )
    grace = settings.server.shutdown_grace_s
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=grace + 10.0, access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    log.info("event loop", loop=loop_name(loop), setting=settings.server.loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    syncing: asyncio.Task[None] | None = None
    server = settings.server
    listening = listening_sockets(  # bound now (a port in use fails before the models load)
        server.host, server.port, receive_buffer=server.receive_buffer_bytes, reuse_port=reuse_port
    )
    try:
        # start-up: models load, then gRPC and Wyoming listen (when their ports are set), all
        # before the HTTP port says "ready"
        await runner.setup()
        if gc_tuning:
            tune_gc()
        if hub.metrics.multiprocess:
            syncing = asyncio.create_task(hub.metrics.sync_forever(settings.metrics.worker_sync_s))
        if not app[DOOR].keys.required and not is_loopback(server.host):
            log.warning("no API keys: every client that reaches this address is served", host=server.host)
        if private is not None:  # siblings forward here what they admitted already
            await GatedSite(runner, private, app[DOOR], gate=Gate()).start()
        for sock in listening:
            await GatedSite(runner, sock, app[DOOR]).start()
        if announce:
            for address in runner.addresses:
                host, port = address[0], address[1]
                print(f"asrhub: listening on http://{host}:{port}", flush=True)
            for url in app[LISTENING]:
                print(f"asrhub: listening on {url}", flush=True)
        if ready is not None:
            ready.set()
        if on_ready is not None:
            on_ready()
        await stop.wait()
        if announce:
            print("asrhub: shutting down", flush=True)
        if server.drain_notice_s > 0:  # /healthz 503, new sessions refused, port still open
            hub.accepting = False
            await asyncio.sleep(server.drain_notice_s)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
        for sock in listening:
            sock.close()  # those no site took (a failed start-up); a no-op for the others
        if syncing is not None:
            syncing.cancel()
        shutdown()  # the spans of the last sessions are exported
        log.info("server stopped")
