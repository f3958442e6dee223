"""resample: chunked == whole-signal resample_poly for any split, pass-through, order, tail flush."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.testing.marbles import marbles_testing
from scipy.signal import resample_poly

from asrhub.frames import AudioChunk, Pong, SpeechStarted
from asrhub.operators.resample import Resampler, resample

from .frame_utils import audio, run, summary

RATES = [8000, 11025, 22050, 32000, 44100, 48000, 96000]


def chunk(n: int, rate: int, start: int, seq: int, value: float = 0.1) -> AudioChunk:
    return AudioChunk(np.full(n, value, np.float32), rate, start / rate, seq)


@settings(max_examples=150, deadline=None)
@given(
    rate_in=st.sampled_from(RATES),
    rate_out=st.sampled_from([16000, *RATES]),
    n=st.integers(0, 12_000),
    cuts=st.lists(st.integers(0, 12_000), max_size=15),
    seed=st.integers(0, 2**16),
)
def test_chunked_equals_whole_signal_for_any_split(
    rate_in: int, rate_out: int, n: int, cuts: list[int], seed: int
) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    points = sorted({c for c in cuts if c < n} | {0, n})
    chunks = [
        AudioChunk(x[a:b], rate_in, a / rate_in, i) for i, (a, b) in enumerate(itertools.pairwise(points))
    ]
    out, done = run(resample(rate_out), chunks)
    assert done
    ratio = Fraction(rate_out, rate_in)
    whole = resample_poly(x.astype(np.float64), ratio.numerator, ratio.denominator) if n else np.zeros(0)
    y = audio(out)
    assert len(y) == len(whole)
    if n:
        assert np.max(np.abs(y - whole)) < 1e-4
    produced = [f for f in out if isinstance(f, AudioChunk)]
    assert all(f.sample_rate == rate_out for f in produced)
    counted = np.cumsum([0] + [len(f.samples) for f in produced])
    assert [f.start for f in produced] == [k / rate_out for k in counted[:-1]]
    assert [f.seq for f in produced] == list(range(len(produced)))


def test_target_rate_passes_the_same_objects_through() -> None:
    frames = [chunk(160, 16000, 0, 0), SpeechStarted(t=0.0), chunk(160, 16000, 160, 1)]
    out, done = run(resample(16000), frames)
    assert done and len(out) == 3 and all(a is b for a, b in zip(out, frames, strict=True))


def test_marbles_order_and_tail_flush_on_completion() -> None:
    ping = Pong(id=1)
    frames = {"a": chunk(4800, 48000, 0, 0), "p": ping, "b": chunk(4800, 48000, 4800, 1)}
    # 48 kHz → 16 kHz: 1600 per 4800 in; the filter looks 30 input samples (10 outputs) ahead,
    # so each chunk's last 10 outputs wait for the next chunk, and the end of the stream.
    with marbles_testing(timespan=1) as (start, cold, _hot, exp):
        source = cold("-a-p-b-|", frames)
        got = start(lambda: source.pipe(resample(16000), ops.map(summary)))
    expected = exp(
        "-x-p-y-(z,|)",
        {
            "x": ("chunk", 16000, 0, 1590, 0),
            "p": ping,
            "y": ("chunk", 16000, 1590, 1600, 1),
            "z": ("chunk", 16000, 3190, 10, 2),
        },
    )
    assert got == expected


def test_a_sine_keeps_its_frequency_and_level() -> None:
    rate = 44100
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sizes = np.random.default_rng(0).integers(1, 3000, 100)
    pieces = np.split(x, np.cumsum(sizes)[np.cumsum(sizes) < len(x)])
    chunks, at = [], 0
    for i, p in enumerate(pieces):
        chunks.append(AudioChunk(p, rate, at / rate, i))
        at += len(p)
    y = audio(run(resample(16000), chunks)[0])
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(14000)))
    assert abs(np.argmax(spectrum) * 16000 / 14000 - 440) < 2
    assert abs(np.sqrt(np.mean(y[1000:-1000] ** 2)) - 0.5 / np.sqrt(2)) < 0.01


def test_a_rate_change_flushes_the_old_filter_first() -> None:
    frames = [chunk(4800, 48000, 0, 0), chunk(1600, 16000, 1600, 1), chunk(800, 8000, 2400, 2)]
    out, _ = run(resample(16000), frames)
    assert [summary(f) for f in out] == [
        ("chunk", 16000, 0, 1590, 0),
        ("chunk", 16000, 1590, 10, 1),  # the 48 kHz filter's tail
        ("chunk", 16000, 1600, 1600, 2),  # the 16 kHz samples, with this stream's start and seq
        ("chunk", 16000, 4800, 1580, 3),  # restarted at the 8 kHz chunk's own start
        ("chunk", 16000, 6380, 20, 4),
    ]


def test_resampler_state_is_bounded() -> None:
    rs = Resampler(44100, 16000)
    for _ in range(50):
        rs.process(np.zeros(4410, np.float32))
    assert len(rs._buf) <= 2 * 10 * 441 // 160 + 441 + 2
