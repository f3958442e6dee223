"""Where a callback may go: no server-side request forgery.

* only ``http`` and ``https`` URLs, without user info, at most :data:`MAX_URL` characters;
* the host is resolved, and every address it resolves to must be public (``is_global`` and not
  multicast; an IPv4-mapped IPv6 address counts as its IPv4 address): loopback, private,
  link-local, multicast, reserved and unspecified addresses are refused — unless the host name
  or the address is listed in ``jobs.callback_allow`` (names, exact; addresses or CIDR blocks);
* the check is made again at each connection by :class:`CheckedResolver`, aiohttp's resolver for
  the callback client, so the address connected to is an address that was checked (a name that
  resolves to a public address when the job is accepted and to 127.0.0.1 later is refused then);
* redirects are never followed (the client posts with ``allow_redirects=False``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from asrhub.errors import HubError

MAX_URL = 2048
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Allow:
    """``jobs.callback_allow``: host names and networks a callback may reach though not public."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry.rstrip("."))

    def permits(self, host: str, address: Address) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.networks):
            return True
        return address.is_global and not address.is_multicast


def check_url(url: str) -> tuple[str, int]:
    """The (host, port) of an acceptable callback URL; ``bad_message`` otherwise."""
    if len(url) > MAX_URL:
        raise HubError("bad_message", f"the callback URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HubError("bad_message", f"the callback URL is not valid: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HubError("bad_message", "the callback URL must be http:// or https:// with a host")
    if parts.username is not None or parts.password is not None:
        raise HubError("bad_message", "the callback URL must not carry user info")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


class CheckedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses :class:`Allow` permits; none left is an
    ``OSError`` (the connection is not made)."""

    def __init__(self, allow: Allow) -> None:
        self.allow = allow
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if self.allow.permits(host, ipaddress.ip_address(r["host"]))]
        if not kept:
            found = ", ".join(sorted({r["host"] for r in results}))
            raise RefusedTarget(f"the callback host {host} resolves to {found}: not a public address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class RefusedTarget(OSError):
    """A callback host that resolves to no permitted address."""


async def check_target(url: str, allow: Allow) -> None:
    """Refuse (``bad_message``) a callback URL that is malformed or whose host resolves to an
    address the hub must not reach — at submission, so the client hears of it at once."""
    host, port = check_url(url)
    resolver = CheckedResolver(allow)
    try:
        await resolver.resolve(host, port, socket.AF_UNSPEC)
    except RefusedTarget as exc:
        raise HubError("bad_message", f"{exc} (jobs.callback_allow lists the exceptions)") from None
    except OSError as exc:
        raise HubError("bad_message", f"cannot resolve the callback host {host}: {exc}") from None
    finally:
        await resolver.close()
