"""``meter_audio`` with the hub's real usage meter: audio is counted in batches (not per chunk),
cut at the sample where the key's quota ends, and nothing passes after it; events pass."""

from __future__ import annotations

import numpy as np
import pytest

from asrhub.config import KeyLimits, Limits
from asrhub.frames import AudioChunk, SpeechStarted
from asrhub.metrics.hub import HubMetrics
from asrhub.operators.meter_audio import meter_audio
from asrhub.usage import UsageMeter
from asrhub.usage.session_meter import SETTLE_S

from .frame_utils import run, summary

KEY = "key-0123456789ab"
RATE = 16_000


def chunks(n: int, samples: int = 1600) -> list[AudioChunk]:
    return [AudioChunk(np.zeros(samples, np.float32), RATE, i * samples / RATE, i) for i in range(n)]


def meter(quota_s: float | None = None) -> UsageMeter:
    per_key = {KEY: KeyLimits(audio_seconds_per_day=quota_s)} if quota_s is not None else {}
    return UsageMeter(Limits(per_key=per_key), HubMetrics())


def test_audio_is_credited_once_a_second_and_whole_at_the_close() -> None:
    usage = meter()
    session = usage.session(KEY)
    out, completed = run(meter_audio(session), chunks(30))  # 3 s in 100 ms chunks
    assert completed and [summary(f) for f in out] == [summary(c) for c in chunks(30)]
    credited = usage.today[KEY].audio_seconds
    assert 3.0 - SETTLE_S <= credited < 3.0  # the last batch waits for a second more, or the close
    assert usage.used_s(KEY) == credited
    usage.release(session)
    assert abs(usage.today[KEY].audio_seconds - 3.0) < 1e-9
    usage.release(session)  # idempotent
    assert abs(usage.totals[KEY].audio_seconds - 3.0) < 1e-9


def test_the_chunk_that_crosses_the_quota_is_cut_at_its_sample_and_nothing_follows() -> None:
    usage = meter(quota_s=1.25)
    session = usage.session(KEY)
    reached: list[bool] = []
    session.on_exhausted = lambda: reached.append(True)
    frames = [*chunks(15)[:6], SpeechStarted(t=0.6), *chunks(15)[6:]]
    out, completed = run(meter_audio(session), frames)
    audio = [f for f in out if isinstance(f, AudioChunk)]
    assert [summary(f) for f in audio[:-1]] == [summary(c) for c in chunks(12)]
    assert sum(len(f.samples) for f in audio) == round(1.25 * RATE)  # to the sample
    assert audio[-1].start == 1.2 and len(audio[-1].samples) == 800
    assert SpeechStarted(t=0.6) in out and completed
    assert reached == [True] and session.exhausted
    assert usage.remaining(KEY) == 0.0 and abs(usage.today[KEY].audio_seconds - 1.25) < 1e-9
    more, _ = run(meter_audio(session), chunks(3))
    assert more == []  # past the quota: nothing passes, and it is not counted
    assert abs(usage.today[KEY].audio_seconds - 1.25) < 1e-9


def test_a_key_already_at_its_quota_passes_nothing_and_anonymous_has_none() -> None:
    usage = meter(quota_s=1.0)
    usage.audio(KEY, 1.0)
    session = usage.session(KEY)
    out, _ = run(meter_audio(session), chunks(2))
    assert out == [] and session.exhausted
    anonymous = usage.session(None)
    out, _ = run(meter_audio(anonymous), chunks(20))
    assert len(out) == 20 and usage.remaining(None) is None


def test_counting_a_pcm_chunk_does_not_make_its_float_copy() -> None:
    """A VAD-only session never needs float samples; metering must not make them (it did:
    ``len(frame.samples)`` cost 5 µs of a 17 µs frame, docs/benchmarks.md)."""
    from asrhub.operators._pcm import _SAMPLES, Pcm16Chunk

    usage = meter()
    chunk = Pcm16Chunk(None, RATE, 0.0, 0, pcm=bytes(3200))  # type: ignore[arg-type]
    out, _ = run(meter_audio(usage.session(KEY)), [chunk])
    assert out == [chunk]
    with pytest.raises(AttributeError):
        _SAMPLES.__get__(chunk, Pcm16Chunk)  # still not made
