"""The one door every protocol passes before it reads a body of any size or gets a session.

Who is calling (:mod:`~asrhub.door.keys`: each protocol hands over the key its own carrier held),
may they (:mod:`~asrhub.door.hosts`: the ``Host`` and browser ``Origin``; the gate's connection
caps, :mod:`~asrhub.door.gate`; the hub's session caps, ``Hub.open_async``), and how long may
they wait before they say what they want (:mod:`~asrhub.door.deadline`: ``start_timeout_s`` to
the first message that opens a session, ``idle_timeout_s`` between messages while none is open).

The door knows no protocol: the transports find the key in their carrier, ask the door, and say
"no" in their protocol's own shape (docs/security.md has the table of both).
"""

from __future__ import annotations

from dataclasses import dataclass

from asrhub.settings.schema import Settings

from .deadline import Deadline
from .gate import Gate, Ticket
from .hosts import Hosts, is_loopback
from .keys import Keys, split_keys

__all__ = ["Deadline", "Door", "Gate", "Hosts", "Keys", "Ticket", "is_loopback"]


@dataclass(frozen=True)
class Door:
    keys: Keys
    hosts: Hosts
    gate: Gate
    start_timeout_s: float = 10.0
    """From connecting to the message that opens a session (``limits.start_timeout_s``)."""
    idle_timeout_s: float = 60.0
    """Between messages while no session is open, and within a request body
    (``limits.idle_timeout_s``; an open session has its own idle clock)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Door:
        server, limits = settings.server, settings.limits
        return cls(
            keys=Keys(split_keys(server.api_keys)),
            hosts=Hosts.build(
                bind=server.host, allowed_hosts=server.allowed_hosts, allowed_origins=server.allowed_origins
            ),
            gate=Gate(total=server.max_connections, per_address=server.max_connections_per_address),
            start_timeout_s=limits.start_timeout_s,
            idle_timeout_s=limits.idle_timeout_s,
        )

    def identify(self, presented: str | None) -> str | None:
        """The caller's identity from the key it presented (see :meth:`Keys.identify`)."""
        return self.keys.identify(presented)
