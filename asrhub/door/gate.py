"""Connection caps: how many callers may be inside at once, in total and per client address.

Every protocol's connection passes the same gate before it may read a request of any size or
get a session: a TCP connection of the HTTP port (WebSocket, Socket.io over WebSocket, SSE, the
OpenAI and Deepgram APIs, the static UI), an Engine.IO long-polling client, a gRPC call, a
Wyoming connection. The gate hands out a :class:`Ticket` that the connection gives back when it
ends (idempotent), so what is counted is what is open — including connections that have not
said what they want yet, which is why they are also bounded in time (:mod:`asrhub.door.deadline`).

Sessions are counted by the hub (``limits.max_sessions``, ``limits.max_sessions_per_key``); the
gate counts connections, with or without a session.
"""

from __future__ import annotations

from collections import Counter

from asrhub.errors import HubError


class Ticket:
    """One admitted connection; :meth:`leave` gives its place back (idempotent)."""

    __slots__ = ("_gate", "address", "kind")

    def __init__(self, gate: Gate, address: str | None, kind: str) -> None:
        self._gate: Gate | None = gate
        self.address = address
        self.kind = kind

    def leave(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate._leave(self)

    @property
    def inside(self) -> bool:
        return self._gate is not None


class Gate:
    def __init__(self, *, total: int = 0, per_address: int = 0) -> None:
        self.total = total
        """Connections at once, every protocol together; 0: no limit."""
        self.per_address = per_address
        """Connections at once from one client address; 0: no limit."""
        self._count = 0
        self._by_address: Counter[str] = Counter()
        self._by_kind: Counter[str] = Counter()
        self.refused = 0

    def __len__(self) -> int:
        return self._count

    def at(self, address: str) -> int:
        """Connections open from ``address``."""
        return self._by_address[address]

    def kinds(self) -> dict[str, int]:
        """Connections open, by kind (``http``, ``socketio``, ``grpc``, ``wyoming``)."""
        return {k: v for k, v in self._by_kind.items() if v}

    def enter(self, address: str | None, kind: str) -> Ticket:
        """Admit one connection from ``address`` (None: unknown, counted in the total only).

        Raises a fatal ``capacity`` :class:`HubError` at a cap."""
        if self.total and self._count >= self.total:
            self.refused += 1
            raise HubError("capacity", f"the hub is at its limit of {self.total} connections", fatal=True)
        if address is not None and self.per_address and self._by_address[address] >= self.per_address:
            self.refused += 1
            raise HubError(
                "capacity",
                f"{address} is at its limit of {self.per_address} connections at once",
                fatal=True,
            )
        self._count += 1
        self._by_kind[kind] += 1
        if address is not None:
            self._by_address[address] += 1
        return Ticket(self, address, kind)

    def _leave(self, ticket: Ticket) -> None:
        self._count -= 1
        self._by_kind[ticket.kind] -= 1
        if ticket.address is not None:
            self._by_address[ticket.address] -= 1
            if self._by_address[ticket.address] <= 0:
                del self._by_address[ticket.address]
