"""Hostile input against every parser and decoder, without a server: hypothesis properties and a
bounded, seeded fuzz run.

The properties: the wire parser answers anything with a message or a ``HubError`` whose code is
``bad_message``/``too_large``; a config either validates or is refused with ``bad_message`` /
``unknown_provider``; the session's front chain (decode → resample → vad_gate) turns any bytes
in any declared format into audio and non-fatal ``bad_audio``/``too_large`` errors — never an
exception, never a non-finite sample, never a hang; ``decode_file`` raises ``ValueError`` or
returns finite audio; any sample rate costs a bounded resampling filter.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import struct
import sys
import time
import traceback
from typing import Any

import numpy as np
import pytest
import reactivex
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reactivex.subject import Subject

from asrhub.config import AudioFormat, Limits
from asrhub.errors import HubError
from asrhub.frames import AudioChunk, ErrorEvent, Frame, RawAudio, SpeechEnded, SpeechStarted
from asrhub.hub import Hub
from asrhub.operators.decode import decode, decode_file
from asrhub.operators.resample import MAX_FACTOR, Resampler, resample
from asrhub.operators.vad_gate import vad_gate
from asrhub.protocol import ClientMessage, parse_message
from asrhub.wiring import build_pipeline
from tests.audio_utils import encode, fixture, load_wav

LONG = "--long" in sys.argv or os.environ.get("RELIABILITY_LONG", "") not in ("", "0")
EXAMPLES = 2000 if LONG else 150
FUZZ_PER_FORMAT = 1000 if LONG else 40
ENCODINGS = ["pcm_s16le", "pcm_f32le", "wav", "opus", "ogg", "webm", "mp3", "flac", "auto"]
CONTAINERS = ["wav", "flac", "mp3", "opus", "webm"]
PROPS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
KNOWN_TYPES = ["session.start", "session.end", "ping", "session.resume", "audio", "start", ""]
types = st.sampled_from(KNOWN_TYPES) | st.text(max_size=12)


def messages() -> st.SearchStrategy[Any]:
    keys = st.sampled_from(["type", "config", "id", "token", "last_segment_id", "resume", "action", "data"])
    flat = st.dictionaries(keys, json_values, max_size=5)
    typed = st.builds(lambda t, rest: {**rest, "type": t}, types, flat)
    return typed | flat | json_values


# ------------------------------------------------------------------ the wire parser


@PROPS
@given(raw=st.binary(max_size=300) | st.text(max_size=300))
def test_any_bytes_or_text_parse_or_are_refused(raw: bytes | str) -> None:
    _parse(raw)


@PROPS
@given(obj=messages(), wrap=st.sampled_from(["json", "socketio", "wrapped"]))
def test_any_json_message_parses_or_is_refused(obj: Any, wrap: str) -> None:
    if wrap == "json":
        _parse(json.dumps(obj))
    elif wrap == "wrapped":
        _parse(json.dumps({"action": "send", "data": obj}), refused=True)
    else:  # a Socket.io payload arrives decoded, under an event name
        for event in ("session.start", "session.end", "ping", "session.resume", "bogus"):
            _parse(obj, event=event)


def test_nesting_size_and_number_extremes_are_refused_not_raised() -> None:
    for raw in (
        "[" * 2000,
        "{" * 5000,
        '{"type": "ping", "id": ' + "[" * 999 + "]" * 999 + "}",
        '{"type":"ping","id":1e999}',
        '{"type":"ping","id":NaN}',
        "x" * 70_000,
        b"\xff\xfe{",
        "",
    ):
        _parse(raw)
    message = parse_message('{"type":"ping","id":' + "[" * 100 + "]" * 100 + "}")
    assert message.type == "ping"


def _parse(raw: Any, *, event: str | None = None, refused: bool = False) -> ClientMessage | None:
    try:
        message = parse_message(raw, event=event)
    except HubError as exc:
        assert exc.code in ("bad_message", "too_large") and not exc.fatal, exc
        return None
    assert not refused, message
    assert message.type in ("session.start", "session.end", "ping", "session.resume")
    return message


# ------------------------------------------------------------------ session configs

HUB = Hub(providers={}, pipeline_factory=build_pipeline, limits=Limits())


@PROPS
@given(
    config=st.fixed_dictionaries(
        {},
        optional={
            "provider": json_values | st.sampled_from(["none", "whisper", ["none"], ["x", "none"]]),
            "language": json_values,
            "audio": st.fixed_dictionaries(
                {},
                optional={
                    "encoding": st.sampled_from([*ENCODINGS, "aiff", ""]) | json_values,
                    "sample_rate": st.integers() | st.floats() | st.sampled_from([0, -1, 10**12, 2**63]),
                    "channels": st.integers(-5, 10_000) | json_values,
                },
            )
            | json_values,
            "vad": st.dictionaries(st.sampled_from(["enabled", "aggressiveness", "silence_ms"]), json_values),
            "wakeword": st.dictionaries(st.sampled_from(["enabled", "names", "threshold"]), json_values),
            "partials": json_values,
        },
    )
    | json_values
)
def test_any_config_validates_or_is_refused(config: Any) -> None:
    try:
        resolved = HUB.resolve_config(config)
    except HubError as exc:
        assert exc.code in ("bad_message", "unknown_provider") and not exc.fatal
        return
    assert 4000 <= resolved.audio.sample_rate <= 384_000 and 1 <= resolved.audio.channels <= 32
    assert all(np.isfinite([resolved.wakeword.threshold, resolved.wakeword.timeout_s]))


# ------------------------------------------------------------------ the decoders

SPEECH, _ = load_wav(fixture("quick_fox.wav"))
ENCODED = {fmt: encode(SPEECH[: 16000 * 2], 16000, fmt) for fmt in CONTAINERS}
ALLOWED = (AudioChunk, ErrorEvent, SpeechStarted, SpeechEnded)


def run_front(fmt: AudioFormat, pieces: list[bytes]) -> list[Frame]:
    """decode → resample → vad_gate over ``pieces`` (no event loop: the compressed decoder then
    drains synchronously). Asserts the stream completes without an error notification."""
    subject: Subject[Frame] = Subject()
    out: list[Frame] = []
    failures: list[Exception] = []
    done: list[bool] = []
    chain = reactivex.compose(decode(fmt, max_buffer_bytes=1 << 20), resample(16000), vad_gate())
    chain(subject).subscribe(out.append, failures.append, lambda: done.append(True))
    for piece in pieces:
        subject.on_next(RawAudio(piece))
    subject.on_completed()
    assert failures == [], "".join(traceback.format_exception(failures[0]))
    assert done == [True]
    last_end = 0.0
    errors = 0
    for frame in out:
        assert isinstance(frame, ALLOWED), frame
        if isinstance(frame, ErrorEvent):
            assert frame.code in ("bad_audio", "too_large") and not frame.fatal, frame
            errors += 1
        elif isinstance(frame, AudioChunk):
            assert frame.sample_rate == 16000 and np.isfinite(frame.samples).all()
            # PCM is clipped to [-1, 1]; a (corrupt) compressed stream and the resampler's
            # ringing may overshoot a little; every consumer clips (vad_gate, wakeword).
            assert np.abs(frame.samples).max(initial=0.0) <= 2.0
            assert frame.start >= last_end - 1e-6
            last_end = frame.end
    assert errors <= 6  # at most 5 decoder errors, plus one at the end of the stream
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def mutate(data: bytes, rng: random.Random) -> bytes:
    """Truncate, flip bytes, zero a range, insert or duplicate garbage — one or a few of them."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["truncate", "flip", "zero", "insert", "duplicate", "head"])
        if not b:
            break
        i = rng.randrange(len(b))
        if kind == "truncate":
            del b[i:]
        elif kind == "flip":
            for _ in range(rng.randint(1, 16)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == "zero":
            b[i : i + rng.randint(1, 512)] = bytes(min(len(b) - i, rng.randint(1, 512)))
        elif kind == "insert":
            b[i:i] = rng.randbytes(rng.randint(1, 256))
        elif kind == "duplicate":
            b[i:i] = b[i : i + rng.randint(1, 1024)]
        else:
            b[: rng.randint(1, 64)] = rng.randbytes(rng.randint(1, 64))
    return bytes(b)


@PROPS
@given(
    encoding=st.sampled_from(ENCODINGS),
    rate=st.integers(4000, 384_000),
    channels=st.integers(1, 32),
    data=st.binary(max_size=6000),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_random_bytes_in_any_declared_format(
    encoding: str, rate: int, channels: int, data: bytes, cuts: list[int]
) -> None:
    run_front(AudioFormat(encoding=encoding, sample_rate=rate, channels=channels), split(data, cuts))  # type: ignore[arg-type]


@PROPS
@example(values=[float("inf"), float("-inf")], channels=2, odd=0, cuts=[])  # the mean of ±inf
@given(
    values=st.lists(st.floats(width=32), min_size=1, max_size=800),
    channels=st.integers(1, 4),
    odd=st.integers(0, 3),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
)
def test_float_audio_with_nan_inf_and_odd_byte_counts(
    values: list[float], channels: int, odd: int, cuts: list[int]
) -> None:
    data = np.asarray(values, np.float32).tobytes() + b"\x01" * odd
    fmt = AudioFormat(encoding="pcm_f32le", sample_rate=16000, channels=channels)
    out = run_front(fmt, split(data, cuts))
    errors = [f for f in out if isinstance(f, ErrorEvent)]
    nonfinite = not np.isfinite(np.asarray(values, np.float32)).all()
    if odd or len(values) % channels:
        assert any("sample frame" in e.message for e in errors)
    if not nonfinite:
        assert not any("NaN" in e.message for e in errors)


def float_wav(values: np.ndarray, channels: int) -> bytes:
    """A WAV of IEEE float64 samples (format tag 3)."""
    data = values.astype("<f8").tobytes()
    fmt = struct.pack("<HHIIHH", 3, channels, 16000, 16000 * 8 * channels, 8 * channels, 64)
    body = b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_float64_wav_with_huge_and_infinite_samples() -> None:
    values = np.array([1e300, -1e300, np.inf, -np.inf, np.nan, 0.5] * 200)
    for channels in (1, 2, 3):
        out = run_front(AudioFormat(encoding="wav"), split(float_wav(values, channels), [7, 100, 2001]))
        assert any(isinstance(f, ErrorEvent) and "NaN" in f.message for f in out)
        samples, _ = decode_file(float_wav(values, channels), "wav", strict=False)
        assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0
        with pytest.raises(ValueError, match="NaN"):
            decode_file(float_wav(values, channels), "wav")


@PROPS
@given(
    fmt=st.sampled_from(CONTAINERS),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 50_000), max_size=6),
)
def test_mutated_real_files_stream_without_escaping(fmt: str, seed: int, cuts: list[int]) -> None:
    data = mutate(ENCODED[fmt], random.Random(seed))
    declared = random.Random(seed).choice([fmt, "auto"])
    run_front(AudioFormat(encoding=declared), split(data, cuts))  # type: ignore[arg-type]


@PROPS
@example(rate=15_999)  # rounds to the target rate itself (found by the --long run)
@example(rate=383_999)
@given(rate=st.integers(1000, 768_000))
def test_any_sample_rate_costs_a_bounded_filter(rate: int) -> None:
    started = time.perf_counter()
    resampler = Resampler(rate, 16000)
    assert time.perf_counter() - started < 0.5  # a design, not a stall of the event loop
    assert len(resampler._h) <= 20 * MAX_FACTOR + 1
    n_in = rate // 10
    n = len(resampler.process(np.zeros(n_in, np.float32))) + len(resampler.flush())
    assert abs(n - n_in * 16000 / rate) <= 1600 * 2e-4 + 2  # the rate is exact, or within 1.1e-4


def test_bounded_fuzz_run_over_every_decoder(figures: Any) -> None:
    """Seeded mutations of real wav/flac/mp3/opus/webm files through the streaming decoder and
    ``decode_file`` (strict and lenient), plus random bytes in every declared encoding."""
    rng = random.Random(8)
    tried = decoded = refused = 0
    started = time.perf_counter()
    for fmt in CONTAINERS:
        for _ in range(FUZZ_PER_FORMAT):
            data = mutate(ENCODED[fmt], rng)
            declared = rng.choice([fmt, "auto"])
            cuts = [rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 6))]
            run_front(AudioFormat(encoding=declared), split(data, cuts))  # type: ignore[arg-type]
            for strict in (True, False):
                tried += 1
                try:
                    samples, rate = decode_file(data, declared, strict=strict)
                except ValueError:
                    refused += 1
                else:
                    decoded += 1
                    assert rate > 0 and samples.dtype == np.float32 and np.isfinite(samples).all()
    for encoding in ENCODINGS:
        for _ in range(FUZZ_PER_FORMAT // 4):
            data = rng.randbytes(rng.randint(0, 4000))
            fmt = AudioFormat(encoding=encoding, channels=rng.randint(1, 8))  # type: ignore[arg-type]
            run_front(fmt, split(data, [rng.randrange(4000)]))
            tried += 1
            with pytest.raises(ValueError) if not data else _maybe_value_error():
                decode_file(data, encoding, strict=rng.random() < 0.5)
    inputs = tried + len(CONTAINERS) * FUZZ_PER_FORMAT
    took = time.perf_counter() - started
    figures(
        "fuzz: decoder inputs tried (streaming + decode_file)",
        f"{inputs} in {took:.1f} s; decode_file refused {refused}, decoded {decoded}",
    )


class _maybe_value_error:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, _tb: Any) -> bool:
        return exc_type is ValueError


def test_hypothesis_budget_is_recorded(figures: Any) -> None:
    figures("hypothesis: examples per property", f"{EXAMPLES} ({'--long' if LONG else 'default run'})")
