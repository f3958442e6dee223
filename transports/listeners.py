"""The hub's listeners besides its HTTP port: gRPC (``server.grpc_port``) and Wyoming
(``server.wyoming_port``, optionally advertised over mDNS), in the same process and event loop
as the aiohttp application, on its hub.

:func:`start_listeners` runs after the application's start-up (models loaded) and registers
their stop in the application's shutdown hooks, which run after the graceful shutdown's flush:
SIGTERM → the hub refuses new sessions (gRPC: ``UNAVAILABLE``; Wyoming: an ``error``) and
flushes every open session, each stream delivers its last finals and ends, then the listeners
close.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

from aiohttp import web

from asrhub.logging import get_logger

from .app import DELIVERY_GRACE_S
from .auth import Auth
from .common import AUTH, HUB, SETTINGS, SHUTDOWN_HOOKS

log = get_logger("asrhub.server")

ZEROCONF_HINT = "server.wyoming_zeroconf needs the zeroconf package: pip install 'asrhub[zeroconf]'"


async def start_listeners(
    app: web.Application, *, wake_words: Callable[[], Iterable[str]] = tuple, reuse_port: bool = False
) -> list[str]:
    """Start the listeners the settings ask for; returns their URLs (``grpc://…``, ``tcp://…``).
    ``reuse_port``: the workers of ``--workers N`` share each port (SO_REUSEPORT)."""
    settings, hub = app[SETTINGS], app[HUB]
    server = settings.server
    urls: list[str] = []
    if server.grpc_port:
        from .grpc_server import GrpcServer

        auth: Auth = app[AUTH]
        grpc_server = GrpcServer(hub, auth, server, reuse_port=reuse_port)
        port = await grpc_server.start(server.host, server.grpc_port)
        app[SHUTDOWN_HOOKS].append(lambda: grpc_server.stop(DELIVERY_GRACE_S))
        urls.append(f"grpc://{server.host}:{port}")
    if server.wyoming_port:
        from .wyoming import WyomingServer

        wyoming_server = WyomingServer(hub, wake_words=wake_words)
        port = await wyoming_server.start(server.host, server.wyoming_port, reuse_port=reuse_port)
        app[SHUTDOWN_HOOKS].append(lambda: wyoming_server.stop(DELIVERY_GRACE_S))
        urls.append(f"tcp://{server.host}:{port}")
        if app[AUTH].required:
            log.warning("wyoming has no authentication: the API keys do not protect its port", port=port)
        if server.wyoming_zeroconf and reuse_port:
            log.warning("wyoming_zeroconf is not supported with --workers: not advertised")
        elif server.wyoming_zeroconf:
            await _advertise(app, server.host, port)
    return urls


def _local_address(host: str) -> str:
    """The address to advertise: ``host`` itself, or for a wildcard the interface that routes to
    the mDNS group (a UDP connect sends nothing)."""
    if host not in ("", "0.0.0.0", "::"):
        return socket.gethostbyname(host)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("224.0.0.251", 5353))
        return str(probe.getsockname()[0])


async def _advertise(app: web.Application, host: str, port: int) -> None:
    """Announce ``_wyoming._tcp`` (what Home Assistant's discovery browses for)."""
    try:
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf
    except ImportError as exc:
        raise RuntimeError(ZEROCONF_HINT) from exc
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

    app[SHUTDOWN_HOOKS].insert(0, withdraw)
