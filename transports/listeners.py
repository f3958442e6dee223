"""The hub's listeners besides its HTTP port: gRPC (``server.grpc_port`` on ``server.host``) and
Wyoming (``server.wyoming_port`` on ``server.wyoming_host``, optionally advertised over mDNS), in
the same process and event loop as the aiohttp application, on its hub, behind its door.

:func:`setup` adds one ``cleanup_ctx`` generator per listener after the hub's, so aiohttp starts
them once the models are loaded (before the HTTP port opens) and stops them, in reverse order,
after the graceful shutdown's flush: SIGTERM → the hub refuses new sessions (gRPC:
``UNAVAILABLE``; Wyoming: an ``error``) and flushes every open session, each stream delivers its
last finals and ends, then the listeners close. Their URLs are in ``app[LISTENING]``.

Wyoming has no authentication. It listens on its own address (``server.wyoming_host``, loopback
by default), so exposing the HTTP port with API keys does not expose it; starting it on another
address while keys are set needs ``server.wyoming_unauthenticated = true`` (logged). mDNS
advertises it only where it can be reached: not on loopback, not under ``--workers``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiohttp import web

from asrhub.door import is_loopback
from asrhub.logging import get_logger

from .common import DELIVERY_GRACE_S, HUB, SETTINGS, ListenError
from .door import DOOR

log = get_logger("asrhub.server")

ZEROCONF_HINT = "server.wyoming_zeroconf needs the zeroconf package: pip install 'asrhub[zeroconf]'"
LISTENING: web.AppKey[list[str]] = web.AppKey("listening")
"""The listeners' URLs (``grpc://…``, ``tcp://…``), once started."""


def setup(
    app: web.Application, *, wake_words: Callable[[], Iterable[str]] = tuple, reuse_port: bool = False
) -> None:
    """Start (and stop) the listeners the settings ask for with the application.
    ``reuse_port``: the workers of ``--workers N`` share each port (SO_REUSEPORT)."""
    app[LISTENING] = []
    server = app[SETTINGS].server
    if server.grpc_port:

        async def grpc(app: web.Application) -> AsyncIterator[None]:
            from .grpc_server import GrpcServer

            grpc_server = GrpcServer(app[HUB], app[DOOR], app[SETTINGS], reuse_port=reuse_port)
            port = await grpc_server.start(server.host, server.grpc_port)
            app[LISTENING].append(f"grpc://{server.host}:{port}")
            yield
            await grpc_server.stop(DELIVERY_GRACE_S)

        app.cleanup_ctx.append(grpc)
    if server.wyoming_port:
        advertise = server.wyoming_zeroconf
        if advertise and reuse_port:
            log.warning("wyoming_zeroconf is not supported with --workers: not advertised")
            advertise = False
        elif advertise and is_loopback(server.wyoming_host):
            log.warning("wyoming listens on loopback only (server.wyoming_host): not advertised over mDNS")
            advertise = False

        async def wyoming(app: web.Application) -> AsyncIterator[None]:
            from .wyoming import WyomingServer

            host = server.wyoming_host
            _check_wyoming_address(app)
            wyoming_server = WyomingServer(
                app[HUB],
                app[DOOR],
                wake_words=wake_words,
                max_sessions=server.wyoming_max_sessions,
                write_timeout_s=server.heartbeat_s,  # the time a WebSocket client gets for a pong
            )
            port = await wyoming_server.start(host, server.wyoming_port, reuse_port=reuse_port)
            app[LISTENING].append(f"tcp://{host}:{port}")
            withdraw = await _advertise(host, port) if advertise else None
            yield
            if withdraw is not None:
                await withdraw()
            await wyoming_server.stop(DELIVERY_GRACE_S)

        app.cleanup_ctx.append(wyoming)


def _check_wyoming_address(app: web.Application) -> None:
    server = app[SETTINGS].server
    host = server.wyoming_host
    if is_loopback(host) or not app[DOOR].keys.required:
        return
    if not server.wyoming_unauthenticated:
        raise ListenError(
            f"server.wyoming_host {host!r} is not a loopback address while API keys are set, and "
            "Wyoming has no authentication: every client that reaches it would be served without "
            "a key. Set server.wyoming_unauthenticated = true to allow that, or keep Wyoming on "
            "127.0.0.1 (docs/security.md)"
        )
    log.warning(
        "wyoming serves WITHOUT authentication on a non-loopback address (server.wyoming_unauthenticated)",
        host=host,
        port=server.wyoming_port,
    )


def _local_address(host: str) -> str:
    """The address to advertise: ``host`` itself, or for a wildcard the interface that routes to
    the mDNS group (a UDP connect sends nothing)."""
    if host not in ("", "0.0.0.0", "::"):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("224.0.0.251", 5353))
        return str(probe.getsockname()[0])


async def _advertise(host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Announce ``_wyoming._tcp`` (what Home Assistant's discovery browses for); returns the
    coroutine function that withdraws it."""
    try:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    except ImportError as exc:
        raise ListenError(ZEROCONF_HINT) from exc
    address = _local_address(host)
    name = f"asrhub-{socket.gethostname().split('.')[0]}-{port}"
    info = AsyncServiceInfo(
        "_wyoming._tcp.local.",
        f"{name}._wyoming._tcp.local.",
        addresses=[socket.inet_aton(address)],
        port=port,
        properties={"software": "asrhub"},
    )
    zeroconf = AsyncZeroconf(ip_version=IPVersion.V4Only, interfaces=[address])
    await zeroconf.async_register_service(info)
    log.info("wyoming advertised over mDNS", name=name, address=address, port=port)

    async def withdraw() -> None:
        await zeroconf.async_unregister_service(info)
        await zeroconf.async_close()

    return withdraw
