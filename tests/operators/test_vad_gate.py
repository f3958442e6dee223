"""vad_gate: marbles on synthetic voiced/silent chunks, real speech from the fixtures, re-framing."""

from __future__ import annotations

import numpy as np
import pytest
import webrtcvad
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.testing import ReactiveTest
from reactivex.testing.marbles import marbles_testing

from asrhub.frames import AudioChunk, ErrorEvent, Frame, SpeechEnded, SpeechStarted
from asrhub.operators._pcm import Pcm16Chunk, float_to_pcm16, pcm16_to_float
from asrhub.operators.vad_gate import vad_gate
from tests.audio_utils import fixture, fixture_entry, load_wav, room_noise

from .frame_utils import audio, chunks_of, run, summary

RATE = 16000
CHUNK = 1600  # 100 ms
_t = np.arange(RATE) / RATE
BUZZ = (0.3 * ((_t * 130) % 1 - 0.5)).astype(np.float32)  # webrtcvad calls every frame of this voiced
SILENCE = np.zeros(RATE, np.float32)


def signal(pattern: str) -> np.ndarray:
    """'v' = 100 ms of buzz, 's' = 100 ms of digital silence."""
    return np.concatenate([(BUZZ if c == "v" else SILENCE)[:CHUNK] for c in pattern])


def chunk_lookup(pattern: str) -> dict[str | float, object]:
    x = signal(pattern)
    return {chr(ord("a") + i): c for i, c in enumerate(chunks_of(x, RATE, CHUNK))}


GATE = {"aggressiveness": 3, "start_ms": 60, "silence_ms": 200, "preroll_ms": 100}
# k = 3 + 4 (webrtcvad's hangover) = 7 voiced frames within 11: speech at 200 ms is decided at the
# end of frame 16 (5440 samples); the pre-roll reaches back 100 ms before 200 ms.


def test_marbles_start_preroll_and_completion_inside_speech() -> None:
    with marbles_testing(timespan=1) as (start, cold, _hot, exp):
        source = cold("-a-b-c-d-------e-|", chunk_lookup("ssvvv"))
        got = start(lambda: source.pipe(vad_gate(**GATE), ops.map(summary)))
    expected = exp(
        "-------(S,x,y)-z-(E,|)",
        {
            "S": SpeechStarted(t=0.2),
            "x": ("chunk", RATE, 1600, 5440 - 1600, 0),  # pre-roll + the deciding window
            "y": ("chunk", RATE, 5440, 6400 - 5440, 1),  # the rest of that chunk
            "z": ("chunk", RATE, 6400, 1600, 2),
            "E": SpeechEnded(t=0.5),
        },
    )
    assert got == expected


def test_marbles_end_after_silence_with_hangover_passed() -> None:
    pattern = "ssvvvssssssss"
    x = signal(pattern)
    vad = webrtcvad.Vad(3)  # oracle: where webrtcvad's own voiced run ends
    pcm = (x * 32767).astype(np.int16).tobytes()
    voiced = [vad.is_speech(pcm[i : i + 640], RATE) for i in range(0, len(pcm), 640)]
    last = max(i for i, v in enumerate(voiced) if v)
    boundary = (last + 1 + 10) * 320  # 200 ms = 10 unvoiced frames after the last voiced one
    c = (boundary - 1) // CHUNK
    lookup = chunk_lookup(pattern)
    marble = "".join(f"-{chr(ord('a') + i)}" for i in range(len(pattern))) + "-|"
    with marbles_testing(timespan=1) as (start, cold, _hot, _exp):
        got = start(lambda: cold(marble, lookup).pipe(vad_gate(**GATE), ops.map(summary)))
    tick = {i: 200 + 2 * i + 1 for i in range(len(pattern) + 1)}
    on = ReactiveTest.on_next
    expected = [
        on(tick[3], SpeechStarted(t=0.2)),
        on(tick[3], ("chunk", RATE, 1600, 3840, 0)),
        on(tick[3], ("chunk", RATE, 5440, 960, 1)),
    ]
    seq = 2
    for i in range(4, c):
        expected.append(on(tick[i], ("chunk", RATE, i * CHUNK, CHUNK, seq)))
        seq += 1
    if boundary > c * CHUNK:
        expected.append(on(tick[c], ("chunk", RATE, c * CHUNK, boundary - c * CHUNK, seq)))
    expected.append(on(tick[c], SpeechEnded(t=(last + 1) * 320 / RATE)))
    expected.append(ReactiveTest.on_completed(tick[len(pattern)]))
    assert got == expected


def test_single_noisy_frames_and_short_bursts_do_not_open_the_gate() -> None:
    x = np.zeros(RATE * 2, np.float32)
    x[8000:8320] = BUZZ[:320]  # one 20 ms frame
    x[20000:20960] = BUZZ[:960]  # 60 ms, under start_ms=90 beyond webrtcvad's own hangover
    out, done = run(vad_gate(), chunks_of(x, RATE, CHUNK))
    assert done and out == []
    x[28000:29600] = BUZZ[:1600]  # 100 ms: speech
    out, _ = run(vad_gate(), chunks_of(x, RATE, CHUNK))
    assert [type(f) for f in out if not isinstance(f, AudioChunk)] == [SpeechStarted, SpeechEnded]


def test_other_frames_pass_through_in_order() -> None:
    err = ErrorEvent(code="bad_audio", message="x")
    frames: list[Frame] = [err, *chunks_of(signal("ssvvv"), RATE, CHUNK)]
    frames.insert(4, SpeechStarted(t=9.0))  # someone else's event, after the first voiced chunk
    out, _ = run(vad_gate(**GATE), frames)
    assert out[0] is err and out[1] == SpeechStarted(t=9.0) and out[2] == SpeechStarted(t=0.2)


def test_real_speech_with_silences_gives_one_pair_per_utterance() -> None:
    x, rate = load_wav(fixture("silences.wav"))
    out, _ = run(vad_gate(), chunks_of(x, rate, CHUNK))
    events = [f for f in out if isinstance(f, SpeechStarted | SpeechEnded)]
    truth = fixture_entry("silences.wav")["segments"]
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded] * len(truth)
    for (s, e), seg in zip(zip(events[::2], events[1::2], strict=True), truth, strict=True):
        assert abs(s.t - seg["start"]) < 0.1
        assert 0 <= e.t - seg["end"] < 0.25  # webrtcvad's own hangover comes on top
    # the audio: in order, gated to [t - preroll, decision + hangover], each utterance contiguous
    pos = -1.0
    speaking_since = None
    for f in out:
        if isinstance(f, SpeechStarted):
            speaking_since = f.t
        elif isinstance(f, SpeechEnded):
            speaking_since = None
        else:
            assert isinstance(f, AudioChunk) and speaking_since is not None
            assert f.start >= pos - 1e-9 and f.start >= speaking_since - 0.3 - 1e-9
            pos = f.end
    gated = len(audio(out)) / rate
    spoken = sum(e.t - s.t for s, e in zip(events[::2], events[1::2], strict=True))
    assert spoken < gated <= spoken + len(truth) * (0.3 + 0.5 + 0.04)  # + pre-roll, hangover, frames


def test_room_noise_stays_closed() -> None:
    out, _ = run(vad_gate(), chunks_of(room_noise(5.0, seed=2), RATE, CHUNK))
    assert out == []


SPEECH, _ = load_wav(fixture("hey_jarvis_weather.wav"))
_REFERENCE, _ = run(vad_gate(), chunks_of(SPEECH, RATE, CHUNK))


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(37, 5000), min_size=1, max_size=40))
def test_any_chunking_gives_the_same_events_and_audio(sizes: list[int]) -> None:
    chunks, at, i = [], 0, 0
    while at < len(SPEECH):
        n = sizes[i % len(sizes)]
        chunks.append(AudioChunk(SPEECH[at : at + n], RATE, at / RATE, i))
        at, i = at + n, i + 1
    out, _ = run(vad_gate(), chunks)
    assert [f for f in out if not isinstance(f, AudioChunk)] == [
        f for f in _REFERENCE if not isinstance(f, AudioChunk)
    ]
    np.testing.assert_array_equal(audio(out), audio(_REFERENCE))


def _pcm16_chunks(x: np.ndarray, sizes: list[int], pcm_every: int) -> list[AudioChunk]:
    """x cut by ``sizes``; every ``pcm_every``-th chunk a Pcm16Chunk (0: none), the rest float only."""
    chunks: list[AudioChunk] = []
    at = i = 0
    while at < len(x):
        n = sizes[i % len(sizes)]
        part = x[at : at + n]
        if pcm_every and i % pcm_every == 0:
            chunks.append(Pcm16Chunk(part, RATE, at / RATE, i, float_to_pcm16(part)))
        else:
            chunks.append(AudioChunk(part, RATE, at / RATE, i))
        at, i = at + n, i + 1
    return chunks


PCM_SPEECH = pcm16_to_float(float_to_pcm16(SPEECH))  # PCM16-exact, as decode makes it
_PCM_REFERENCE, _ = run(vad_gate(), chunks_of(PCM_SPEECH, RATE, CHUNK))


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(37, 5000), min_size=1, max_size=40), pcm_every=st.integers(0, 3))
def test_pcm16_chunks_read_as_is_match_the_float_path(sizes: list[int], pcm_every: int) -> None:
    # int16 pre-roll ring, float ring and switches between them: bit-identical output
    out, _ = run(vad_gate(), _pcm16_chunks(PCM_SPEECH, sizes, pcm_every))
    events = [f for f in out if not isinstance(f, AudioChunk)]
    assert events == [f for f in _PCM_REFERENCE if not isinstance(f, AudioChunk)]
    assert len(events) >= 2
    np.testing.assert_array_equal(audio(out), audio(_PCM_REFERENCE))


def _lazy_pcm16_chunks(x: np.ndarray, sizes: list[int]) -> list[AudioChunk]:
    """x as decode cuts it: Pcm16Chunks that carry only the bytes (float samples made on read)."""
    pcm, chunks, at, i = float_to_pcm16(x), [], 0, 0
    while at < len(x):
        n = min(sizes[i % len(sizes)], len(x) - at)
        chunks.append(Pcm16Chunk(None, RATE, at / RATE, i, pcm[2 * at : 2 * (at + n)]))  # type: ignore[arg-type]
        at, i = at + n, i + 1
    return chunks


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(37, 5000), min_size=1, max_size=40), pcm_every=st.integers(0, 3))
def test_events_only_gate_gives_the_same_events_and_no_audio(sizes: list[int], pcm_every: int) -> None:
    # audio=False (no engine, no wake word): the same events at the same times, nothing else
    out, done = run(vad_gate(audio=False), _pcm16_chunks(PCM_SPEECH, sizes, pcm_every))
    assert done
    assert out == [f for f in _PCM_REFERENCE if not isinstance(f, AudioChunk)]
    assert len(out) >= 2


def test_events_only_gate_never_reads_float_samples() -> None:
    chunks = _lazy_pcm16_chunks(PCM_SPEECH, [1600])
    out, _ = run(vad_gate(audio=False), chunks)
    assert out == [f for f in _PCM_REFERENCE if not isinstance(f, AudioChunk)]
    with pytest.raises(AttributeError):  # the float32 slot was never filled
        AudioChunk.__dict__["samples"].__get__(chunks[0], Pcm16Chunk)


@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(37, 5000), min_size=1, max_size=40))
def test_lazy_pcm16_chunks_give_the_same_events_and_audio(sizes: list[int]) -> None:
    out, _ = run(vad_gate(), _lazy_pcm16_chunks(PCM_SPEECH, sizes))
    assert [summary(f) for f in out if not isinstance(f, AudioChunk)] == [
        summary(f) for f in _PCM_REFERENCE if not isinstance(f, AudioChunk)
    ]
    np.testing.assert_array_equal(audio(out), audio(_PCM_REFERENCE))
