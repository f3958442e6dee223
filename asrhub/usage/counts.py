"""What is counted per identity, and where a cluster keeps the shared count."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ANONYMOUS = "anonymous"
"""The identity of callers of a hub without API keys."""


@dataclass(slots=True)
class Counts:
    audio_seconds: float = 0.0
    sessions: int = 0
    requests: int = 0

    def __bool__(self) -> bool:
        return bool(self.audio_seconds or self.sessions or self.requests)

    def add(self, other: Counts) -> None:
        self.audio_seconds += other.audio_seconds
        self.sessions += other.sessions
        self.requests += other.requests

    def plus(self, other: Counts) -> Counts:
        total = Counts(self.audio_seconds, self.sessions, self.requests)
        total.add(other)
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "audio_seconds": round(self.audio_seconds, 3),
            "sessions": self.sessions,
            "requests": self.requests,
        }


class UsageStore(Protocol):
    """The shared count of a cluster (:class:`asrhub.cluster.usage.RedisUsage`)."""

    async def add(
        self, day: str, deltas: Mapping[str, Counts], read: Collection[str] = ()
    ) -> dict[str, float]:
        """Add ``deltas`` (identity → counts) to the day's and the all-time totals; returns the
        day's audio seconds of every identity in ``deltas`` and ``read``, all nodes together.
        Raises when the store did not answer (nothing was added)."""
        ...

    async def read(self, day: str, identity: str) -> tuple[Counts, Counts]:
        """(the day's counts, the all-time counts) of ``identity``, all nodes together."""
        ...
