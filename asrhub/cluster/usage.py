"""The cluster's shared usage count (:class:`asrhub.usage.UsageStore` on Redis).

::

    asrhub:usage:<id>:<YYYY-MM-DD>   HASH  audio_seconds (float), sessions, requests of one key
                                           identity and UTC day; expires DAY_TTL_S after its
                                           last write
    asrhub:usage:<id>:total          HASH  the same since the first count (no expiry: one per
                                           configured key)

``<id>`` is the key's fingerprint (``key-`` and 12 hex digits of its SHA-256) or ``anonymous``,
never the key. Every node adds its own counts with ``HINCRBYFLOAT`` / ``HINCRBY`` — additions
commute, so nodes need no lock — in one pipeline per flush (:data:`asrhub.usage.meter.FLUSH_S`),
which also reads back the day totals the node checks quotas against.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from asrhub.usage import Counts

if TYPE_CHECKING:
    from .leases import Cluster

DAY_TTL_S = 8 * 86_400
"""A day's counts stay readable in Redis this long (a week back, whatever the time zone)."""
FIELDS = ("audio_seconds", "sessions", "requests")


class RedisUsage:
    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster

    def _key(self, identity: str, period: str) -> str:
        return self._cluster.key("usage", identity, period)

    async def add(
        self, day: str, deltas: Mapping[str, Counts], read: Collection[str] = ()
    ) -> dict[str, float]:
        cluster = self._cluster
        pipe = cluster.redis.pipeline(transaction=False)
        order: list[str] = []
        for identity, counts in deltas.items():
            day_key = self._key(identity, day)
            for key in (day_key, self._key(identity, "total")):
                if counts.audio_seconds:
                    pipe.hincrbyfloat(key, "audio_seconds", counts.audio_seconds)
                if counts.sessions:
                    pipe.hincrby(key, "sessions", counts.sessions)
                if counts.requests:
                    pipe.hincrby(key, "requests", counts.requests)
            pipe.expire(day_key, DAY_TTL_S)
        for identity in {*deltas, *read}:
            pipe.hget(self._key(identity, day), "audio_seconds")
            order.append(identity)
        try:
            results = await cluster.call(pipe.execute())
        except Exception as exc:
            cluster.failed(exc)
            raise
        cluster.succeeded()
        found = results[len(results) - len(order) :]
        return {identity: float(value or 0.0) for identity, value in zip(order, found, strict=True)}

    async def read(self, day: str, identity: str) -> tuple[Counts, Counts]:
        cluster = self._cluster
        pipe = cluster.redis.pipeline(transaction=False)
        pipe.hgetall(self._key(identity, day))
        pipe.hgetall(self._key(identity, "total"))
        try:
            today, total = await cluster.call(pipe.execute())
        except Exception as exc:
            cluster.failed(exc)
            raise
        return _counts(today), _counts(total)


def _counts(found: Mapping[bytes, bytes]) -> Counts:
    def field(name: str) -> bytes:
        return found.get(name.encode(), b"0")

    return Counts(
        audio_seconds=float(field("audio_seconds")),
        sessions=int(field("sessions")),
        requests=int(field("requests")),
    )
