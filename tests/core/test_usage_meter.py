"""The usage meter's rules on their own: the UTC day rolls over (today's counts and quotas
reset, totals stay), per-key limits replace the defaults, anonymous is counted but never capped,
and counts a cluster store could not take are kept and sent again (a fault-injecting store)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime

import pytest

from asrhub.config import KeyLimits, Limits
from asrhub.errors import HubError
from asrhub.metrics.hub import HubMetrics
from asrhub.usage import ANONYMOUS, Counts, UsageMeter

KEY, OTHER = "key-0123456789ab", "key-ba9876543210"


class Clock:
    def __init__(self, moment: datetime) -> None:
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now


def test_the_day_rolls_over_at_midnight_utc() -> None:
    clock = Clock(datetime(2026, 12, 7, 23, 59, 58, tzinfo=UTC))
    meter = UsageMeter(Limits(key_audio_seconds_per_day=10.0), HubMetrics(), clock=clock)
    meter.audio(KEY, 10.0)
    meter.request(KEY)
    with pytest.raises(HubError) as refused:
        meter.check(KEY)
    assert refused.value.code == "quota_exceeded" and "2026-12-08T00:00:00Z" in refused.value.message
    clock.now += 5  # 00:00:03 the next day
    meter.check(KEY)  # a new day, a new quota
    assert meter.remaining(KEY) == 10.0 and meter.period.day == "2026-12-08"
    assert KEY not in meter.today and meter.totals[KEY] == Counts(10.0, 0, 1)


def test_per_key_limits_replace_the_defaults_and_anonymous_is_never_capped() -> None:
    limits = Limits(
        key_audio_seconds_per_day=100.0,
        max_sessions_per_key=7,
        per_key={KEY: KeyLimits(audio_seconds_per_day=5.0, max_sessions=2), OTHER: KeyLimits(max_sessions=3)},
    )
    meter = UsageMeter(limits, HubMetrics())
    assert (meter.quota_s(KEY), meter.max_sessions(KEY)) == (5.0, 2)
    assert (meter.quota_s(OTHER), meter.max_sessions(OTHER)) == (100.0, 3)
    assert (meter.quota_s("key-000000000000"), meter.max_sessions("key-000000000000")) == (100.0, 7)
    meter.audio(None, 1e6)
    meter.check(None)  # counted, not capped
    assert meter.today[ANONYMOUS].audio_seconds == 1e6 and meter.remaining(None) is None
    with pytest.raises(HubError, match="would pass"):
        meter.check(KEY, 6.0)  # a whole upload longer than the quota
    meter.check(KEY, 5.0)


def test_a_per_key_entry_must_be_a_fingerprint_and_is_never_echoed() -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError) as refused:
        msgspec.convert({"per_key": {"sk-secret-key": {"max_sessions": 1}}}, Limits)
    assert "sk-secret-key" not in str(refused.value) and "fingerprint" in str(refused.value)


class FakeOutageStore:
    """A cluster store whose first ``fail`` additions fail (Redis unreachable), then adds."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.days: dict[tuple[str, str], Counts] = {}

    async def add(
        self, day: str, deltas: Mapping[str, Counts], read: Collection[str] = ()
    ) -> dict[str, float]:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("redis is down")
        for identity, counts in deltas.items():
            self.days.setdefault((day, identity), Counts()).add(counts)
        return {i: self.days.get((day, i), Counts()).audio_seconds for i in {*deltas, *read}}

    async def read(self, day: str, identity: str) -> tuple[Counts, Counts]:
        found = self.days.get((day, identity), Counts())
        return found, found


async def test_counts_the_store_could_not_take_are_kept_and_sent_again() -> None:
    store = FakeOutageStore(fail=2)
    meter = UsageMeter(Limits(key_audio_seconds_per_day=10.0), HubMetrics(), store=store)
    meter.audio(KEY, 3.0)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await meter.flush()
        assert meter.used_s(KEY) == 3.0  # still counted while the store is down
    meter.audio(KEY, 1.5)
    meter.session_opened(KEY)
    await meter.flush()
    assert store.days[(meter.period.day, KEY)] == Counts(4.5, 1, 0)  # once, nothing lost
    assert meter.used_s(KEY) == 4.5
    store.days[(meter.period.day, KEY)].add(Counts(audio_seconds=5.0))  # another node's audio
    meter.session(KEY)  # a live session: the flush reads its key's total
    await meter.flush()
    assert meter.used_s(KEY) == 9.5 and meter.remaining(KEY) == 0.5
    report = await meter.report(KEY)
    assert report["scope"] == "cluster" and report["audio_seconds"] == 9.5
