"""Which ``Host`` a request may name, and which browser ``Origin`` may drive the hub.

DNS rebinding: a web page on ``evil.example`` can make its own name resolve to 127.0.0.1 and
then talk to a hub on the visitor's loopback as a *same-origin* page — the browser sends
``Origin: http://evil.example:8080`` and ``Host: evil.example:8080``, so an origin check that
compares the two passes. The defence is the ``Host`` itself: a hub bound to loopback answers
only requests that name it by a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``, any
port), unless ``server.allowed_hosts`` says otherwise. Every HTTP route checks it, the static UI
and Socket.io's handshake included. A request with no ``Host`` (HTTP/1.0 health checks) is not
a browser's and passes.

Origins: a request with an ``Origin`` is accepted when the origin is the hub's own (same host
and port as the request's ``Host``), listed in ``server.allowed_origins``, or that list holds
``*``. Clients that send no ``Origin`` (anything but a browser) are not affected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(host: str) -> bool:
    """A bind address that only this machine reaches (``localhost``, 127/8, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(value: str) -> str:
    """The name part of a ``Host`` header (or an allow-list entry): lower case, without the
    port, the IPv6 brackets and a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        name = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        name = value.partition(":")[0]
    else:
        name = value  # a bare name, or a bare IPv6 address
    return name.rstrip(".")


def origin_of(value: str) -> str:
    parts = urlsplit(value.strip().lower())
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else value.strip().lower()


@dataclass(frozen=True)
class Hosts:
    allowed: frozenset[str] | None = None
    """Host names a request may name (``.example.com`` or ``*.example.com``: any subdomain);
    None: any."""
    origins: tuple[str, ...] = ()
    """Normalised ``scheme://host:port`` browser origins besides the hub's own (``*``: any)."""

    @classmethod
    def build(cls, *, bind: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> Hosts:
        """The rules for a hub listening on ``bind``: ``allowed_hosts`` when given (``*``: any),
        else the loopback names when ``bind`` is a loopback address, else any host."""
        listed = [h.strip() for h in allowed_hosts if h.strip()]
        allowed: frozenset[str] | None
        if "*" in listed:
            allowed = None
        elif listed:
            allowed = frozenset(_entry(h) for h in listed)
        elif is_loopback(bind):
            allowed = LOOPBACK_NAMES
        else:
            allowed = None
        return cls(allowed=allowed, origins=tuple(origin_of(o) for o in allowed_origins))

    @property
    def any_origin(self) -> bool:
        return "*" in self.origins

    def host_allowed(self, host: str | None) -> bool:
        if host is None or self.allowed is None:
            return True
        name = host_name(host)
        if name in self.allowed:
            return True
        return any(entry.startswith(".") and name.endswith(entry) for entry in self.allowed)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None or self.any_origin:
            return True
        normalized = origin_of(origin)
        if normalized in self.origins:
            return True
        return host is not None and urlsplit(normalized).netloc == host.lower()

    def socketio_origins(self) -> str | list[str] | None:
        """python-socketio's ``cors_allowed_origins``: None means same origin only."""
        if self.any_origin:
            return "*"
        return list(self.origins) or None


def _entry(value: str) -> str:
    if value.startswith("*."):
        return "." + host_name(value[2:])
    if value.startswith("."):
        return "." + host_name(value[1:])
    return host_name(value)
