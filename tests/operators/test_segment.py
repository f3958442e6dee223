"""segment: utterances between speech events, force-split, min length, snapshots, windows, gaps."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.testing.marbles import marbles_testing

from asrhub.frames import AudioChunk, ErrorEvent, Segment, SpeechEnded, SpeechStarted, WakeWordDetected
from asrhub.operators.segment import segment

from .frame_utils import run, summary

RATE = 10  # 10 Hz keeps the sample counts readable: 5 samples = 0.5 s


def c(start: int, n: int, seq: int = 0) -> AudioChunk:
    """n samples starting at sample ``start``; values encode their position."""
    return AudioChunk(np.arange(start, start + n, dtype=np.float32) / 1000, RATE, start / RATE, seq)


S, E = SpeechStarted(t=0.0), SpeechEnded(t=1.5)


def marbles(op: object, source: str, lookup: dict[str | float, object]) -> list[object]:
    with marbles_testing(timespan=1) as (start, cold, _hot, _exp):
        return start(lambda: cold(source, lookup).pipe(op, ops.map(summary)))  # type: ignore[arg-type]


def expected(marble: str, lookup: dict[str | float, object]) -> list[object]:
    with marbles_testing(timespan=1) as (_start, _cold, _hot, exp):
        return exp(marble, lookup)


def test_utterance_with_a_snapshot_and_the_final_before_speech_ended() -> None:
    op = segment(max_s=30, min_s=0.25, partial_interval_s=1.0)
    got = marbles(op, "-S-a-b-c-E-----|", {"S": S, "a": c(0, 5), "b": c(5, 5), "c": c(10, 5), "E": E})
    assert got == expected(
        "-S---p---(F,E)-|",
        {"S": S, "p": ("seg", 1, 0, 10, False, 10), "F": ("seg", 1, 0, 15, True, 15), "E": E},
    )


def test_short_utterances_are_dropped_and_do_not_use_an_id() -> None:
    op = segment(max_s=30, min_s=0.25)
    got = marbles(
        op,
        "-S-a-E-S-b-E-----|",
        {"S": S, "a": c(0, 2), "E": E, "b": c(10, 3)},
    )
    assert got == expected("-S---E-S---(F,E)-|", {"S": S, "E": E, "F": ("seg", 1, 10, 13, True, 3)})


def test_force_split_at_max_s_exactly() -> None:
    op = segment(max_s=1.0, min_s=0.25)
    out, _ = run(op, [S, c(0, 7), c(7, 7), E])
    assert [summary(f) for f in out] == [S, ("seg", 1, 0, 10, True, 10), ("seg", 2, 10, 14, True, 4), E]
    seg1, seg2 = out[1], out[2]
    assert isinstance(seg1, Segment) and isinstance(seg2, Segment)
    np.testing.assert_array_equal(
        np.round(np.concatenate([seg1.samples, seg2.samples]) * 1000), np.arange(14)
    )
    assert (seg2.start, seg2.end) == (1.0, 1.4)


def test_completion_flushes_the_open_utterance() -> None:
    got = marbles(segment(max_s=30, min_s=0.25), "-S-a-b-|", {"S": S, "a": c(0, 5), "b": c(5, 5)})
    assert got == expected("-S-----(F,|)", {"S": S, "F": ("seg", 1, 0, 10, True, 10)})


def test_window_mode_cuts_windows_and_at_gaps_and_passes_events() -> None:
    w = WakeWordDetected(name="hey_jarvis", score=0.9, t=1.0)
    op = segment(max_s=30, min_s=0.25, window_s=1.0)
    got = marbles(
        op,
        "-a-b-w-c-d-------|",
        {"a": c(0, 6), "b": c(6, 6), "w": w, "c": c(12, 6), "d": c(25, 6)},  # d after a 0.7 s gap
    )
    assert got == expected(
        "---F-w---G-------(H,|)",
        {
            "F": ("seg", 1, 0, 10, True, 10),
            "w": w,
            "G": ("seg", 2, 10, 18, True, 8),
            "H": ("seg", 3, 25, 31, True, 6),
        },
    )


def test_snapshots_wait_for_min_s_and_skip_intervals_crossed_in_one_chunk() -> None:
    op = segment(max_s=30, min_s=0.6, partial_interval_s=0.2)
    out, _ = run(op, [S, c(0, 5), c(5, 3), c(8, 12), E])
    assert [summary(f) for f in out] == [
        S,
        ("seg", 1, 0, 8, False, 8),  # 0.5 s < min_s: no snapshot yet; at 0.8 s one
        ("seg", 1, 0, 20, False, 20),  # 0.8 → 2.0 s in one chunk: one snapshot, not six
        ("seg", 1, 0, 20, True, 20),
        E,
    ]


def test_other_frames_pass_and_audio_outside_speech_is_consumed() -> None:
    err = ErrorEvent(code="bad_audio", message="x")
    out, done = run(segment(max_s=30, min_s=0.0), [c(0, 5), err, S, c(5, 5), E, c(10, 5)])
    assert done and [summary(f) for f in out] == [err, S, ("seg", 1, 5, 10, True, 5), E]


@settings(max_examples=50, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30), window=st.integers(3, 25))
def test_windows_tile_the_audio(sizes: list[int], window: int) -> None:
    chunks, at = [], 0
    for i, n in enumerate(sizes):
        chunks.append(c(at, n, i))
        at += n
    out, _ = run(segment(max_s=30, min_s=0.0, window_s=window / RATE), chunks)
    segs = [f for f in out if isinstance(f, Segment)]
    assert all(s.final for s in segs) and [s.segment_id for s in segs] == list(range(1, len(segs) + 1))
    assert [len(s.samples) for s in segs[:-1]] == [window] * (len(segs) - 1)
    np.testing.assert_array_equal(np.round(np.concatenate([s.samples for s in segs]) * 1000), np.arange(at))
    assert all(abs(s.start - i * window / RATE) < 1e-9 for i, s in enumerate(segs))


def loud(n: int) -> np.ndarray:
    return (0.5 * np.sin(np.arange(n) * 0.3)).astype(np.float32)


def test_force_split_cuts_at_the_quietest_point_and_loses_nothing() -> None:
    """1 kHz audio, max 10 s: a 0.2 s pause at 8.4–8.6 s is where the cut goes (not at 10 s
    through a word); the rest opens the next utterance; the pieces add up to the input."""
    rate = 1000
    x = loud(12_000)
    x[8400:8600] = 0.001
    chunks = [AudioChunk(x[i : i + 700], rate, i / rate, i // 700) for i in range(0, len(x), 700)]
    out, _ = run(segment(max_s=10.0, min_s=0.25, split_search_s=3.0), [S, *chunks, E])
    segs = [f for f in out if isinstance(f, Segment)]
    assert [s.segment_id for s in segs] == [1, 2]
    assert 8.4 <= segs[0].end <= 8.6 and segs[1].start == segs[0].end
    assert segs[1].end == 12.0
    np.testing.assert_array_equal(np.concatenate([s.samples for s in segs]), x)


def test_force_split_without_a_pause_still_cuts_within_the_search_window() -> None:
    rate = 1000
    x = loud(25_000)
    chunks = [AudioChunk(x[i : i + 999], rate, i / rate, i) for i in range(0, len(x), 999)]
    out, _ = run(segment(max_s=10.0, min_s=0.25, split_search_s=3.0), [S, *chunks, E])
    segs = [f for f in out if isinstance(f, Segment)]
    assert all(7.0 <= s.end - s.start <= 10.0 for s in segs[:-1]) and len(segs) == 3
    np.testing.assert_array_equal(np.concatenate([s.samples for s in segs]), x)
    assert all(a.end == b.start for a, b in pairwise(segs))


def sound(start: int, n: int, level: float) -> AudioChunk:
    return AudioChunk(np.full(n, level, dtype=np.float32), RATE, start / RATE, 0)


def test_quiet_audio_makes_no_snapshot_until_sound_returns() -> None:
    """A pause (or the VAD's hangover) adds audio but no sound: no partial decode is asked for
    until a chunk within 20 dB of the utterance's loudest arrives, and then one at once."""
    op = segment(max_s=30, min_s=0.2, partial_interval_s=0.2)
    chunks = [sound(0, 3, 0.5), sound(3, 3, 0.01), sound(6, 3, 0.02), sound(9, 3, 0.2), sound(12, 3, 0.01)]
    out, _ = run(op, [S, *chunks, E])
    assert [summary(f) for f in out] == [
        S,
        ("seg", 1, 0, 3, False, 3),
        ("seg", 1, 0, 12, False, 12),  # 0.6 s and 0.9 s were quiet (-34, -28 dB): none
        ("seg", 1, 0, 15, True, 15),  # the quiet tail: no snapshot before the final
        E,
    ]
