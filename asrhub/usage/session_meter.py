"""One session's audio meter: what the chain's ``meter_audio`` stage asks for each chunk.

The hot path is :meth:`SessionMeter.take`: a float addition and a comparison per chunk. The
seconds reach the hub's :class:`~asrhub.usage.meter.UsageMeter` in batches — whenever the
session has fed :data:`SETTLE_S` seconds since the last batch (sooner when less than that is
left of the key's quota), and when it closes — so the meter, its Prometheus counters and the
cluster's count see one call per second of audio per session, never one per frame.

At the quota: the chunk that crosses it is cut where the quota ends (``take`` answers how much
of it may pass), nothing after it passes, and ``on_exhausted`` is called once (the session
ends itself: see :meth:`asrhub.session.session.Session`). Several sessions of one key see each
other's audio at their next batch, so together they may pass the quota by up to
:data:`SETTLE_S` seconds each (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Ledger(Protocol):
    """What a session's meter needs of the hub's (:class:`~asrhub.usage.meter.UsageMeter`)."""

    def remaining(self, key: str | None) -> float | None: ...
    def audio(self, key: str | None, seconds: float) -> None: ...
    def used_up(self, key: str | None) -> str: ...


SETTLE_S = 1.0
"""Seconds of a session's audio between two credits to the meter."""


class SessionMeter:
    __slots__ = ("_fed", "_horizon", "_meter", "exhausted", "identity", "on_exhausted", "released")

    def __init__(self, meter: Ledger, identity: str) -> None:
        self._meter = meter
        self.identity = identity
        self._fed = 0.0  # seconds passed since the last credit
        self._horizon = 0.0  # settle when _fed reaches this (0: at the first chunk)
        self.exhausted = False
        self.released = False
        self.on_exhausted: Callable[[], None] | None = None
        """Called once, when the quota is reached (the session sets it)."""

    def take(self, seconds: float) -> float:
        """Count a chunk of ``seconds``; returns how much of it may pass (all of it, until the
        quota: then the part up to the quota, and 0 after)."""
        fed = self._fed + seconds
        if fed < self._horizon:
            self._fed = fed
            return seconds
        return self._settle(seconds)

    def message(self) -> str:
        """What the session's ``quota_exceeded`` error says."""
        return self._meter.used_up(self.identity)

    def close(self) -> None:
        """Credit what was fed since the last batch (the session closed). Idempotent."""
        fed, self._fed = self._fed, 0.0
        self._horizon = float("inf")
        if fed:
            self._meter.audio(self.identity, fed)

    def _settle(self, seconds: float) -> float:
        if self.exhausted:
            return 0.0
        meter, fed = self._meter, self._fed
        remaining = meter.remaining(self.identity)  # None: no quota
        allowed = seconds if remaining is None else max(0.0, min(seconds, remaining - fed))
        credit = fed + allowed
        self._fed = 0.0
        if credit:
            meter.audio(self.identity, credit)
        if remaining is None:
            self._horizon = SETTLE_S
            return allowed
        left = remaining - credit
        if allowed < seconds or left <= 0.0:
            self.exhausted = True
            self._horizon = -1.0  # every later chunk comes here, and passes nothing
            if self.on_exhausted is not None:
                self.on_exhausted()
            return allowed
        self._horizon = min(SETTLE_S, left)
        return allowed
