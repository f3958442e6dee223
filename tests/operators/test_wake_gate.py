"""wake_gate: every state transition as a marble test, plus a property test on chunking.

Letters in the marbles: S/E = vad.speech_started/ended, W = wakeword.detected, lower case =
audio chunks. Audio is compared by its stream-time span (the gate trims by time), events by value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex import operators as ops
from reactivex.testing.marbles import marbles_testing

from asrhub.frames import (
    AudioChunk,
    ErrorEvent,
    FinalTranscript,
    Frame,
    SpeechEnded,
    SpeechStarted,
    WakeWordDetected,
)
from asrhub.operators.wake_gate import Gate, clip, wake_gate

RATE = 16_000


def chunk(start: float, end: float, seq: int = 0) -> AudioChunk:
    n = round((end - start) * RATE)
    return AudioChunk(
        np.arange(round(start * RATE), round(start * RATE) + n, dtype=np.float32), RATE, start, seq
    )


def span(start: float, end: float) -> tuple[str, float, float]:
    return ("audio", start, end)


def describe(frame: Frame) -> Any:
    if isinstance(frame, AudioChunk):
        return ("audio", round(frame.start, 4), round(frame.end, 4))
    return frame


def wake(t: float) -> WakeWordDetected:
    return WakeWordDetected(name="hey_jarvis", score=0.9, t=t)


def check(source: str, inputs: dict[str, Any], expected: str, outputs: dict[str, Any], **kwargs: Any) -> None:
    with marbles_testing(timespan=1) as (start, cold, _hot, exp):
        stream: Observable[Frame] = cold(source, inputs)
        results = start(stream.pipe(wake_gate(**kwargs), ops.map(describe)))
        assert results == exp(expected, outputs)


S0, E2 = SpeechStarted(0.0), SpeechEnded(2.0)


def test_listening_drops_audio_and_passes_vad_events_in_order() -> None:
    check(
        "-S-a-b-E-|", {"S": S0, "a": chunk(0, 1), "b": chunk(1, 2), "E": E2}, "-S-----E-|", {"S": S0, "E": E2}
    )


def test_detection_arms_and_the_rest_of_the_utterance_passes_then_listening() -> None:
    s5, e6 = SpeechStarted(5.0), SpeechEnded(6.0)
    check(
        "-S-a-W-b-c-----d-E-s-f-e-|",
        {
            "S": S0,
            "a": chunk(0, 1),
            "W": wake(1.0),
            "b": chunk(1, 1.5),
            "c": chunk(1.5, 2),
            "d": chunk(2, 2.5),
            "E": SpeechEnded(2.5),
            "s": s5,
            "f": chunk(5, 6),
            "e": e6,
        },
        "-S---W---(b,c)-d-E-s---e-|",
        {
            "S": S0,
            "W": wake(1.0),
            "b": span(1, 1.5),
            "c": span(1.5, 2),
            "d": span(2, 2.5),
            "E": SpeechEnded(2.5),
            "s": s5,
            "e": e6,
        },
    )  # held until confirm_s (1 s) of audio after t, then live; listening after the command


def test_detection_after_its_chunk_releases_the_remembered_tail() -> None:
    e = SpeechEnded(1.4)
    check(
        "-S-a-W-b-E-------|",
        {"S": S0, "a": chunk(0.5, 1.2), "W": wake(1.0), "b": chunk(1.2, 1.4), "E": e},
        "-S---W---(r,b,E)-|",
        {"S": S0, "W": wake(1.0), "r": span(1.0, 1.2), "b": span(1.2, 1.4), "E": e},
    )  # a short command (0.4 s) in the wake word's utterance is released when it ends


def test_preroll_audio_arriving_after_the_detection_is_gated_by_stream_time() -> None:
    s, e = SpeechStarted(0.7), SpeechEnded(1.4)
    check(
        "-W-S-a-b-c-E-------|",
        {"W": wake(1.0), "S": s, "a": chunk(0.7, 0.9), "b": chunk(0.9, 1.1), "c": chunk(1.1, 1.3), "E": e},
        "-W-S-------(b,c,E)-|",
        {"W": wake(1.0), "S": s, "b": span(1.0, 1.1), "c": span(1.1, 1.3), "E": e},
    )


def test_pause_after_the_wake_word_keeps_the_gate_armed_for_the_next_utterance() -> None:
    e1, s2, e3 = SpeechEnded(0.9), SpeechStarted(2.0), SpeechEnded(3.0)
    s4, e5 = SpeechStarted(4.0), SpeechEnded(5.0)
    check(
        "-S-a-W-b-E-s-c-e-T-d-F-|",
        {
            "S": S0,
            "a": chunk(0, 1),
            "W": wake(1.0),
            "b": chunk(1, 1.5),
            "E": e1,
            "s": s2,
            "c": chunk(2, 3),
            "e": e3,
            "T": s4,
            "d": chunk(4, 5),
            "F": e5,
        },
        "-S---W---E-s-c-e-T---F-|",
        {"S": S0, "W": wake(1.0), "E": e1, "s": s2, "c": span(2, 3), "e": e3, "T": s4, "F": e5},
    )  # b is the hangover after "hey jarvis": held, then dropped (speech ended before t)


def test_no_command_before_the_timeout_returns_to_listening() -> None:
    e1, s9, e10 = SpeechEnded(1.1), SpeechStarted(9.5), SpeechEnded(10.0)
    check(
        "-W-E-s-a-e-|",
        {"W": wake(1.0), "E": e1, "s": s9, "a": chunk(9.5, 10), "e": e10},
        "-W-E-s---e-|",
        {"W": wake(1.0), "E": e1, "s": s9, "e": e10},
        timeout_s=8.0,
    )


def test_timeout_cuts_an_utterance_that_is_still_running() -> None:
    e = SpeechEnded(12.0)
    check(
        "-S-W-a-b-c-E-|",
        {"S": S0, "W": wake(1.0), "a": chunk(1, 5), "b": chunk(5, 10), "c": chunk(10, 12), "E": e},
        "-S-W-a-b---E-|",
        {"S": S0, "W": wake(1.0), "a": span(1, 5), "b": span(5, 9), "E": e},
        timeout_s=8.0,
    )


def test_without_vad_the_gate_is_open_for_timeout_s_after_the_detection() -> None:
    check(
        "-a-W-b-c-d-|",
        {"a": chunk(0, 1), "W": wake(1.0), "b": chunk(1, 2), "c": chunk(2, 3.5), "d": chunk(3.5, 4)},
        "---W-b-c---|",
        {"W": wake(1.0), "b": span(1, 2), "c": span(2, 3)},
        timeout_s=2.0,
    )


def test_a_second_detection_while_armed_restarts_the_window() -> None:
    check(
        "-W-a-V-b-c-|",
        {"W": wake(1.0), "a": chunk(1, 2), "V": wake(2.5), "b": chunk(2, 4), "c": chunk(4, 5)},
        "-W-a-V-b-c-|",
        {"W": wake(1.0), "a": span(1, 2), "V": wake(2.5), "b": span(2.5, 4), "c": span(4, 4.5)},
        timeout_s=2.0,
    )


def test_a_detection_after_speech_ended_releases_nothing_of_the_closed_utterance() -> None:
    e = SpeechEnded(1.2)
    check(
        "-S-a-E-W-|",
        {"S": S0, "a": chunk(0.5, 1.2), "E": e, "W": wake(1.0)},
        "-S---E-W-|",
        {"S": S0, "E": e, "W": wake(1.0)},
    )


def test_other_frames_pass_untouched_in_order_and_errors_propagate() -> None:
    final = FinalTranscript(segment_id=1, text="hi", start=0.0, end=1.0, provider="whisper")
    error = ErrorEvent(code="bad_audio", message="x")
    seen: list[Frame] = []
    with marbles_testing(timespan=1) as (start, cold, _hot, _exp):
        stream: Observable[Frame] = cold(
            "-f-a-x-#", {"f": final, "a": chunk(0, 1), "x": error}, ValueError("boom")
        )
        results = start(stream.pipe(wake_gate(timeout_s=1.0), ops.do_action(seen.append)))
        assert [r.value.kind for r in results] == ["N", "N", "E"]
    assert seen[0] is final and seen[1] is error


def test_the_remembered_audio_is_bounded() -> None:
    gate = Gate(timeout_s=8.0, min_command_s=0.3, confirm_s=1.0, lookback_s=2.0)
    for i in range(1000):
        gate.on_frame(chunk(i * 0.1, (i + 1) * 0.1))
    assert sum(c.duration for c in gate.recent) <= 2.0 + 1e-9
    tiny = [AudioChunk(np.zeros(1, np.float32), RATE, 100 + i / RATE, i) for i in range(5000)]
    for c in tiny:
        gate.on_frame(c)
    assert len(gate.recent) <= 1024


def test_held_audio_is_released_at_completion_and_a_long_wait_times_out() -> None:
    check(
        "-S-W-a-|",
        {"S": S0, "W": wake(1.0), "a": chunk(1, 1.5)},
        "-S-W---(a,|)",
        {"S": S0, "W": wake(1.0), "a": span(1, 1.5)},
    )
    e, s9, e10 = SpeechEnded(1.1), SpeechStarted(8.9), SpeechEnded(9.5)
    check(
        "-S-W-a-E-s-b-e-|",
        {"S": S0, "W": wake(1.0), "a": chunk(1, 1.2), "E": e, "s": s9, "b": chunk(8.9, 9.5), "e": e10},
        "-S-W---E-s-b-e-|",
        {"S": S0, "W": wake(1.0), "E": e, "s": s9, "b": span(8.9, 9.0), "e": e10},
    )  # the next utterance starts just before the deadline: it passes until t + timeout_s


def test_clip_is_exact_to_the_sample() -> None:
    c = chunk(1.0, 2.0)
    assert clip(c, 0.0, 3.0) is c
    assert clip(c, 2.0, 3.0) is None
    part = clip(c, 1.5, 1.75)
    assert part is not None and part.start == 1.5 and len(part.samples) == 4000
    assert part.samples[0] == 1.5 * RATE


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 8000), min_size=1, max_size=40),
    t_sample=st.integers(0, 60_000),
    delay=st.integers(0, 3),
    timeout=st.sampled_from([0.25, 1.0, 2.5]),
)
def test_without_vad_exactly_the_samples_in_the_window_pass_whatever_the_chunking(
    sizes: list[int], t_sample: int, delay: int, timeout: float
) -> None:
    """The detection may arrive up to ``delay`` chunks after the chunk that holds its time (as the
    wakeword operator emits it), as long as it is within the look-back."""
    edges = np.cumsum([0, *sizes])
    t_sample = min(t_sample, int(edges[-1]))
    t = t_sample / RATE
    holder = int(np.searchsorted(edges, t_sample, side="right")) - 1
    at = min(len(sizes), holder + 1 + delay)
    while at > 0 and (edges[at] - t_sample) / RATE > 1.9:
        at -= 1
    at = max(at, 0)
    gate = Gate(timeout_s=timeout, min_command_s=0.3, confirm_s=1.0, lookback_s=2.0)
    out: list[Frame] = []
    for i, size in enumerate(sizes):
        if i == at:
            out.extend(gate.on_frame(wake(t)))
        out.extend(gate.on_frame(chunk(edges[i] / RATE, (edges[i] + size) / RATE, i)))
    if at == len(sizes):
        out.extend(gate.on_frame(wake(t)))
    audio = [f for f in out if isinstance(f, AudioChunk)]
    got = np.concatenate([a.samples for a in audio]) if audio else np.zeros(0, np.float32)
    end = min(int(edges[-1]), t_sample + round(timeout * RATE))
    np.testing.assert_array_equal(got, np.arange(t_sample, max(t_sample, end), dtype=np.float32))
    starts = [a.start for a in audio]
    assert starts == sorted(starts)
