"""The metering period: one UTC day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Period:
    day: str
    """``YYYY-MM-DD`` (UTC): the period's name, part of its Redis key."""
    start: datetime
    end: datetime

    @classmethod
    def at(cls, timestamp: float) -> Period:
        """The UTC day that holds ``timestamp`` (seconds since the epoch)."""
        moment = datetime.fromtimestamp(timestamp, UTC)
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return cls(day=start.date().isoformat(), start=start, end=start + timedelta(days=1))

    def to_dict(self) -> dict[str, str]:
        return {"start": _iso(self.start), "end": _iso(self.end)}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
