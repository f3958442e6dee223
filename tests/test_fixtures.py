"""The committed speech fixtures and the audio helpers the engine tests build on."""

from __future__ import annotations

import itertools
import wave
from typing import Any

import numpy as np
import pytest

from tests import audio_utils as au

ENTRIES = au.manifest()["files"]


def test_manifest_lists_every_committed_wav() -> None:
    listed = {e["file"] for e in ENTRIES}
    on_disk = {p.name for p in au.FIXTURES.glob("*.wav")}
    assert listed == on_disk
    # 3.5 MB of English/Korean speech + ~0.55 MB of German, Spanish, French and key-term speech
    assert sum(p.stat().st_size for p in au.FIXTURES.glob("*.wav")) < 4.1e6


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e["file"])
def test_fixture_is_16k_mono_pcm16_and_matches_manifest(entry: dict[str, Any]) -> None:
    path = au.fixture(entry["file"])
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        duration = w.getnframes() / w.getframerate()
    assert duration == pytest.approx(entry["duration"], abs=0.02)
    assert entry["text"].strip()
    assert entry["segments"], "every fixture has at least one timed utterance"
    x, rate = au.load_wav(path)
    assert rate == 16000
    prev_end = 0.0
    for seg in entry["segments"]:
        assert prev_end <= seg["start"] < seg["end"] <= duration
        prev_end = seg["end"]
        speech = x[int(seg["start"] * rate) : int(seg["end"] * rate)]
        assert au.rms(speech) > 0.02, "speech is audible"
    # the padding before the first utterance is quiet room tone, not digital zero
    lead = x[: int(entry["segments"][0]["start"] * rate)]
    assert 0 < au.rms(lead) < 0.003


def test_silences_fixture_has_long_gaps() -> None:
    segs = au.fixture_entry("silences.wav")["segments"]
    assert len(segs) == 4
    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(segs)]
    assert all(2.0 <= g <= 4.0 for g in gaps), gaps


def test_long_fixture_is_over_30_seconds() -> None:
    assert au.fixture_entry("long_40s.wav")["duration"] > 30


@pytest.mark.parametrize("fmt", au.FORMATS)
def test_encode_round_trips_through_pyav(fmt: str) -> None:
    x, rate = au.load_wav(au.fixture("quick_fox.wav"))
    data = au.encode(x, rate, fmt)
    assert data and data != au.pcm16_bytes(x)
    y, out_rate = au.decode(data, rate=16000)
    assert out_rate == 16000
    assert abs(y.size - x.size) < 0.1 * rate  # codec priming/padding only
    n = min(x.size, y.size)
    if fmt in ("wav", "flac"):  # lossless: sample-exact up to PCM16 quantisation
        assert y.size == x.size
        assert np.max(np.abs(y - x)) < 1e-3
    else:  # lossy: same loudness, and the waveforms correlate once aligned
        assert au.rms(y) == pytest.approx(au.rms(x), rel=0.2)
        lag = int(np.argmax(np.correlate(y[:n], x[: n - 2000], mode="valid")))
        corr = np.corrcoef(x[: n - 2000], y[lag : lag + n - 2000])[0, 1]
        assert corr > 0.8


@pytest.mark.parametrize("fmt", au.FORMATS)
def test_encode_accepts_non_native_rates(fmt: str) -> None:
    x = au.tones(1.0, seed=1, rate=44100)
    y, _ = au.decode(au.encode(x, 44100, fmt), rate=16000)
    assert abs(y.size - 16000) < 1600


def test_noise_helpers_are_seeded_and_calibrated() -> None:
    x, _ = au.load_wav(au.fixture("quick_fox.wav"))
    a, b = au.add_noise(x, 10, seed=3), au.add_noise(x, 10, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, au.add_noise(x, 10, seed=4))
    active = np.abs(x) > 10 ** (-50 / 20)
    snr = 10 * np.log10(np.mean(x[active] ** 2) / np.mean((a - x)[active] ** 2))
    assert snr == pytest.approx(10, abs=1.0)
    room = au.room_noise(2.0, seed=1)
    assert room.size == 32000 and 20 * np.log10(au.rms(room)) == pytest.approx(-60, abs=0.5)
    music = au.tones(2.0, seed=1)
    assert music.size == 32000 and np.max(np.abs(music)) <= 1.0


def test_wer_normalises_case_and_punctuation() -> None:
    assert au.wer("Hey Jarvis, what's the weather?", "hey jarvis whats the weather") == 0.0
    assert au.wer("the quick brown fox", "the quick brown box") == pytest.approx(0.25)
    assert au.wer("", "") == 0.0 and au.wer("a b", "") == 1.0
