"""The hub's usage meter: counts per identity and UTC day, the quotas, and the shared count.

Single node: the counts live here (today's and all-time, per identity; the configured keys
and ``anonymous`` bound how many). With a cluster (a :class:`~asrhub.usage.counts.UsageStore`)
this node adds what it counted to the shared count once every :data:`FLUSH_S` seconds — one
pipeline to Redis per node and second, whatever the number of sessions — and learns from the
answer each key's day total over all nodes, which its quota checks use (plus what it counted
since). Redis unreachable: the node keeps counting, retries the same additions at the next
flush, and checks quotas against the last total it heard plus its own counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from asrhub.config import KeyLimits, Limits
from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.metrics.hub import HubMetrics
from asrhub.tasks import stop_tasks

from .counts import ANONYMOUS, Counts, UsageStore
from .period import Period
from .session_meter import SessionMeter

QUOTA_EXCEEDED = "quota_exceeded"
FLUSH_S = 1.0
"""Seconds between two additions of a node's counts to the cluster's shared count."""

log = get_logger("asrhub.usage")
STOP_S = 2.0
"""Shutdown waits this long for the flush loop to stop."""

K = TypeVar("K")


class UsageMeter:
    def __init__(
        self,
        limits: Limits,
        metrics: HubMetrics,
        *,
        store: UsageStore | None = None,
        clock: Callable[[], float] = time.time,
        flush_s: float = FLUSH_S,
    ) -> None:
        self.limits = limits
        self._metrics = metrics
        self.store = store
        self._clock = clock
        self.flush_s = flush_s
        self.period = Period.at(clock())
        self.today: dict[str, Counts] = {}
        """This node's counts of the current period."""
        self.totals: dict[str, Counts] = {}
        """This node's counts since it started (the cluster's all-time count is in the store)."""
        self._pending: dict[tuple[str, str], Counts] = {}
        """(day, identity) → counted here, not yet in the store."""
        self._shared: dict[str, float] = {}
        """identity → the day's audio seconds of every node, as the store last answered."""
        self._sending: dict[str, float] = {}
        """identity → today's audio seconds on their way to the store (a flush in flight)."""
        self._live: Counter[str] = Counter()
        """identity → this node's open sessions that meter audio against a quota."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.flushes = 0
        """Additions sent to the store (a benchmark reads it)."""

    # ------------------------------------------------------------------ limits

    def identity(self, key: str | None) -> str:
        return ANONYMOUS if key is None else key

    def _own(self, key: str | None) -> KeyLimits | None:
        return None if key is None else self.limits.per_key.get(key)

    def quota_s(self, key: str | None) -> float:
        """The key's audio seconds per day (0: unlimited; a hub without keys caps nothing)."""
        if key is None or key == ANONYMOUS:
            return 0.0
        own = self._own(key)
        if own is not None and own.audio_seconds_per_day is not None:
            return own.audio_seconds_per_day
        return self.limits.key_audio_seconds_per_day

    def max_sessions(self, key: str | None) -> int:
        """The key's open sessions at most (``limits.max_sessions_per_key`` or its own)."""
        own = self._own(key)
        if own is not None and own.max_sessions is not None:
            return own.max_sessions
        return self.limits.max_sessions_per_key

    def used_s(self, key: str | None) -> float:
        """Audio seconds of the key today, every node together as far as this node knows."""
        identity = self.identity(key)
        self._roll()
        mine = self.today.get(identity)
        if self.store is None:
            return mine.audio_seconds if mine is not None else 0.0
        pending = self._pending.get((self.period.day, identity))
        unsent = (pending.audio_seconds if pending is not None else 0.0) + self._sending.get(identity, 0.0)
        shared = self._shared.get(identity)
        if shared is None:  # the store never answered for it: this node's own count
            return mine.audio_seconds if mine is not None else 0.0
        return shared + unsent

    def remaining(self, key: str | None) -> float | None:
        """Audio seconds the key may still use today (None: no quota)."""
        quota = self.quota_s(key)
        if not quota:
            return None
        return max(0.0, quota - self.used_s(key))

    def check(self, key: str | None, more_s: float = 0.0) -> None:
        """Raise a fatal ``quota_exceeded`` :class:`HubError` when the key has used its quota
        (or ``more_s`` seconds more would pass it: a whole upload)."""
        quota = self.quota_s(key)
        if not quota:
            return
        used = self.used_s(key)
        if used >= quota or (more_s and used + more_s > quota):
            if more_s and used < quota:
                message = (
                    f"this audio ({more_s:.1f} s) would pass the API key's daily quota of {quota:g} s "
                    f"({quota - used:.1f} s left until {self.period.to_dict()['end']})"
                )
            else:
                message = self.used_up(key)
            raise HubError(QUOTA_EXCEEDED, message, fatal=True)

    def used_up(self, key: str | None) -> str:
        """The message of a key at its quota."""
        return (
            f"the API key has used its daily audio quota of {self.quota_s(key):g} s "
            f"(it resets at {self.period.to_dict()['end']})"
        )

    # ------------------------------------------------------------------ counting

    def request(self, key: str | None) -> None:
        self._count(self.identity(key), Counts(requests=1))

    def session_opened(self, key: str | None) -> None:
        self._count(self.identity(key), Counts(sessions=1))

    def audio(self, key: str | None, seconds: float) -> None:
        self._count(self.identity(key), Counts(audio_seconds=seconds))

    def session(self, key: str | None) -> SessionMeter:
        """A new session's audio meter (its ``meter_audio`` stage reads it); :meth:`release`
        it when the session closes."""
        identity = self.identity(key)
        if self.quota_s(key):
            self._live[identity] += 1
        return SessionMeter(self, identity)

    def release(self, meter: SessionMeter | None) -> None:
        """A session closed: credit what its meter holds (idempotent; None: no meter)."""
        if meter is None or meter.released:
            return
        meter.released = True
        meter.close()
        identity = meter.identity
        if identity in self._live:
            self._live[identity] -= 1
            if self._live[identity] <= 0:
                del self._live[identity]

    def _count(self, identity: str, counts: Counts) -> None:
        self._roll()
        _counts(self.today, identity).add(counts)
        _counts(self.totals, identity).add(counts)
        if self.store is not None:
            _counts(self._pending, (self.period.day, identity)).add(counts)
        self._metrics.key_used(identity, counts.audio_seconds, counts.sessions, counts.requests)

    def _roll(self) -> None:
        now = self._clock()
        if now >= self.period.end.timestamp():
            self.period = Period.at(now)
            self.today.clear()
            self._shared.clear()

    # ------------------------------------------------------------------ reading

    async def report(self, key: str | None) -> dict[str, Any]:
        """The key's usage (``GET /v1/usage``): today's counts, the quota and what remains,
        the all-time counts — every node's, with a cluster whose store answers."""
        identity = self.identity(key)
        self._roll()
        period = self.period
        day = self.today.get(identity, Counts())
        total = self.totals.get(identity, Counts())
        scope = "node"
        if self.store is not None:
            with contextlib.suppress(Exception):
                shared_day, shared_total = await self.store.read(period.day, identity)
                unsent = self._pending.get((period.day, identity), Counts())
                earlier = Counts()
                for (d, i), counts in self._pending.items():
                    if i == identity and d != period.day:
                        earlier.add(counts)
                day = shared_day.plus(unsent)
                total = shared_total.plus(unsent).plus(earlier)
                self._shared[identity] = shared_day.audio_seconds
                scope = "cluster"
        quota = self.quota_s(key)
        used = day.audio_seconds if self.store is None or scope == "cluster" else self.used_s(key)
        return {
            "key_id": identity,
            "period": period.to_dict(),
            **day.to_dict(),
            "quota": {
                "audio_seconds_per_day": quota or None,
                "audio_seconds_remaining": round(max(0.0, quota - used), 3) if quota else None,
                "max_sessions": self.max_sessions(key) if key is not None else None,
            },
            "total": total.to_dict(),
            "scope": scope,
        }

    # ------------------------------------------------------------------ the shared count

    async def refresh(self, key: str | None) -> None:
        """Learn the key's day total from the store now (before a quota check), when the key
        has a quota and this node has not heard it within a flush period."""
        store = self.store
        if store is None or not self.quota_s(key):
            return
        identity = self.identity(key)
        if identity in self._live:
            return  # the flush loop keeps it fresh
        self._roll()
        with contextlib.suppress(Exception):
            found = await store.add(self.period.day, {}, (identity,))
            self._shared.update(found)

    def start(self) -> None:
        if self.store is not None and self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="asrhub-usage-flush")

    async def stop(self) -> None:
        """Stop the flush loop and send what is left (one try)."""
        task, self._task = self._task, None
        self._stopping = True  # the loop ends at its next turn even if the cancellation is lost
        if task is not None and (stuck := await stop_tasks([task], STOP_S)):
            log.warning("usage flush did not stop when cancelled", tasks=stuck)
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.flush()

    async def _flush_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception as exc:  # the store's outage: kept, sent again next time
                log.debug("usage flush failed", error=repr(exc))

    async def flush(self) -> None:
        """Add what this node counted to the store; learn the day totals of the keys it meters."""
        store = self.store
        if store is None:
            return
        self._roll()
        pending, self._pending = self._pending, {}
        days: dict[str, dict[str, Counts]] = {}
        for (day, identity), counts in pending.items():
            days.setdefault(day, {})[identity] = counts
        today = self.period.day
        days.setdefault(today, {})
        self._sending = {identity: counts.audio_seconds for identity, counts in days[today].items()}
        try:
            for day, deltas in days.items():
                read = tuple(self._live) if day == today else ()
                if not deltas and not read:
                    continue
                found = await store.add(day, deltas, read)
                self.flushes += 1
                for identity in deltas:
                    pending.pop((day, identity), None)
                if day == self.period.day:
                    self._shared.update(found)
        finally:
            self._sending = {}
            for place, counts in pending.items():  # not sent: back in line, before newer counts
                _counts(self._pending, place).add(counts)


def _counts(table: dict[K, Counts], key: K) -> Counts:
    found = table.get(key)
    if found is None:
        found = table[key] = Counts()
    return found
