"""decode for raw PCM and WAV: marbles, split invariance, header edge cases, garbage."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reactivex import operators as ops
from reactivex.testing.marbles import marbles_testing

from asrhub.config import AudioFormat
from asrhub.frames import AudioChunk, ErrorEvent, Pong, RawAudio, SpeechStarted
from asrhub.operators._pcm import Pcm16Chunk, float_to_pcm16
from asrhub.operators.decode import decode, decode_file

from .frame_utils import audio, run, summary


def s16(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}h", *values)


def wav_bytes(
    body: bytes,
    *,
    rate: int = 16000,
    channels: int = 1,
    bits: int = 16,
    tag: int = 1,
    data_size: int | None = None,
    extensible: bool = False,
    before_data: bytes = b"",
    after_data: bytes = b"",
) -> bytes:
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * align, align, bits)
    if extensible:
        fmt += (
            struct.pack("<HHI", 22, bits, 0)
            + struct.pack("<H", tag)
            + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        )
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + before_data
    size = len(body) if data_size is None else data_size
    chunks += b"data" + struct.pack("<I", size) + body + after_data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def bad(message_part: str = "") -> ErrorEvent:
    return ErrorEvent(code="bad_audio", message=message_part)


# ------------------------------------------------------------------ marbles


def test_pcm_s16_marbles_keep_a_split_sample_and_pass_other_frames_in_order() -> None:
    ping = Pong(id=7)
    frames = {
        "a": RawAudio(s16(16384, -16384)),
        "b": RawAudio(s16(8192) + b"\x00"),  # the last sample's low byte…
        "c": RawAudio(b"\x40"),  # …and its high byte
        "p": ping,
        "d": RawAudio(b"\x01"),  # half a sample, then the stream ends
    }
    with marbles_testing(timespan=1) as (start, cold, _hot, exp):
        source = cold("-a-b-c-p-d-|", frames)
        got = start(lambda: source.pipe(decode(AudioFormat()), ops.map(summary)))
    err = ErrorEvent(code="bad_audio", message="stream ended inside a sample frame: 1 trailing bytes dropped")
    expected = exp(
        "-x-y-z-p---(e,|)",
        {
            "x": ("chunk", 16000, 0, 2, 0),
            "y": ("chunk", 16000, 2, 1, 1),
            "z": ("chunk", 16000, 3, 1, 2),
            "p": ping,
            "e": err,
        },
    )
    assert got == expected


def test_pcm_values_scale_and_stereo_mixdown() -> None:
    out, done = run(
        decode(AudioFormat(channels=2, sample_rate=8000)), [RawAudio(s16(16384, 0, -32768, -32768))]
    )
    assert done
    [chunk] = out
    assert isinstance(chunk, AudioChunk) and chunk.sample_rate == 8000
    np.testing.assert_allclose(chunk.samples, [0.25, -1.0])
    assert not chunk.samples.flags.writeable


def test_f32_nan_is_an_error_and_becomes_silence_and_values_are_clipped() -> None:
    x = np.array([0.5, np.nan, np.inf, 2.0, -3.0], np.float32).tobytes()
    with marbles_testing(timespan=1) as (start, cold, _hot, exp):
        source = cold("-a-----b-|", {"a": RawAudio(x), "b": RawAudio(np.float32([0.25]).tobytes())})
        got = start(lambda: source.pipe(decode(AudioFormat(encoding="pcm_f32le")), ops.map(summary)))
    e = ErrorEvent(code="bad_audio", message="NaN or infinite samples in float audio (replaced by silence)")
    assert got == exp("-(e,x)-y-|", {"e": e, "x": ("chunk", 16000, 0, 5, 0), "y": ("chunk", 16000, 5, 1, 1)})
    out, _ = run(decode(AudioFormat(encoding="pcm_f32le")), [RawAudio(x)])
    np.testing.assert_array_equal(audio(out), [0.5, 0.0, 0.0, 1.0, -1.0])


# ------------------------------------------------------------------ WAV


@pytest.mark.parametrize(
    ("bits", "tag", "extensible", "pack"),
    [
        (16, 1, False, lambda v: struct.pack("<h", round(v * 32768))),
        (24, 1, False, lambda v: round(v * 8388608).to_bytes(3, "little", signed=True)),
        (32, 1, True, lambda v: struct.pack("<i", round(v * 2147483648))),
        (32, 3, False, lambda v: struct.pack("<f", v)),
        (64, 3, True, lambda v: struct.pack("<d", v)),
        (8, 1, False, lambda v: bytes([round(v * 128) + 128])),
    ],
)
def test_wav_formats_header_rate_wins_and_byte_by_byte_header(
    bits: int, tag: int, extensible: bool, pack: object
) -> None:
    values = [0.5, -0.25, 0.125, -1.0, 0.0, 0.75]
    body = b"".join(pack(v) for v in values)  # type: ignore[operator]
    data = wav_bytes(body, rate=22050, channels=2, bits=bits, tag=tag, extensible=extensible)
    frames = [RawAudio(data[i : i + 1]) for i in range(len(data))]  # every byte its own frame
    out, done = run(decode(AudioFormat(encoding="wav", sample_rate=16000)), frames)
    assert done and all(isinstance(f, AudioChunk) and f.sample_rate == 22050 for f in out)
    np.testing.assert_allclose(audio(out), [0.125, -0.4375, 0.375], atol=1e-6)
    assert [f.start for f in out if isinstance(f, AudioChunk)] == [0.0, 1 / 22050, 2 / 22050]


@pytest.mark.parametrize("data_size", [0, 0xFFFFFFFF, 10_000])
def test_wav_streaming_sizes_and_sizes_larger_than_the_data(data_size: int) -> None:
    body = s16(*range(0, 4000, 40))
    data = wav_bytes(body, data_size=data_size, before_data=b"LIST" + struct.pack("<I", 5) + b"abcde\x00")
    out, done = run(decode(AudioFormat(encoding="wav")), [RawAudio(data[:50]), RawAudio(data[50:])])
    assert done and not [f for f in out if isinstance(f, ErrorEvent)]
    np.testing.assert_allclose(audio(out) * 32768, range(0, 4000, 40))


def test_wav_bytes_after_a_known_data_size_are_ignored() -> None:
    data = wav_bytes(s16(1, 2, 3), after_data=b"LIST\x04\x00\x00\x00junk")
    out, _ = run(decode(AudioFormat(encoding="wav")), [RawAudio(data)])
    np.testing.assert_allclose(audio(out) * 32768, [1, 2, 3])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (wav_bytes(b"\x00" * 10, tag=7, bits=8), "WAV format tag 0x7 with 8-bit samples is not supported"),
        (b"OggS" + b"\x00" * 100, "not a WAV stream (no RIFF header)"),
        (b"RIFF\x00\x00\x00\x00AVI " + b"\x00" * 40, "not a WAV stream (RIFF type is not WAVE)"),
        (wav_bytes(b"", channels=0), "WAV header has 0 channels at 16000 Hz: not supported"),
    ],
)
def test_unsupported_wav_is_one_bad_audio_and_the_rest_is_ignored(data: bytes, message: str) -> None:
    ping = Pong(id=1)
    out, done = run(decode(AudioFormat(encoding="wav")), [RawAudio(data), RawAudio(s16(5, 5)), ping])
    assert done and out == [ErrorEvent(code="bad_audio", message=message), ping]


def test_wav_header_bound_and_stream_ending_inside_the_header() -> None:
    big_chunk = b"junk" + struct.pack("<I", 100_000) + b"\x00" * 100_000
    data = wav_bytes(s16(1), before_data=big_chunk)
    out, _ = run(
        decode(AudioFormat(encoding="wav"), max_header_bytes=4096),
        [RawAudio(data[:5000]), RawAudio(data[5000:])],
    )
    assert out == [ErrorEvent(code="bad_audio", message="no WAV data chunk within the first 4096 bytes")]
    out, done = run(decode(AudioFormat(encoding="wav")), [RawAudio(wav_bytes(s16(1))[:30])])
    assert done and out == [ErrorEvent(code="bad_audio", message="stream ended inside the WAV header")]


# ------------------------------------------------------------------ properties

_FORMATS = [
    (AudioFormat(encoding="pcm_s16le"), lambda x: (np.round(x * 32767)).astype("<i2").tobytes()),
    (AudioFormat(encoding="pcm_s16le", channels=2), lambda x: (np.round(x * 32767)).astype("<i2").tobytes()),
    (AudioFormat(encoding="pcm_f32le", channels=3), lambda x: x.astype("<f4").tobytes()),
    (AudioFormat(encoding="wav"), lambda x: wav_bytes(x.astype("<f4").tobytes(), bits=32, tag=3, channels=2)),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(_FORMATS) - 1),
    n=st.integers(0, 600).map(lambda n: n * 6),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    seed=st.integers(0, 2**16),
)
def test_random_splits_decode_like_one_frame(which: int, n: int, cuts: list[int], seed: int) -> None:
    fmt, encode = _FORMATS[which]
    x = np.random.default_rng(seed).uniform(-1, 1, n).astype(np.float32)
    data = encode(x)
    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    frames = [RawAudio(data[a:b]) for a, b in itertools.pairwise(points)]
    whole, _ = run(decode(fmt), [RawAudio(data)])
    split, done = run(decode(fmt), frames)
    assert done and not [f for f in split if isinstance(f, ErrorEvent)]
    np.testing.assert_array_equal(audio(split), audio(whole))
    chunks = [f for f in split if isinstance(f, AudioChunk)]
    counted = np.cumsum([0] + [len(c.samples) for c in chunks])
    assert [c.start for c in chunks] == [k / c.sample_rate for k, c in zip(counted, chunks, strict=False)]
    assert [c.seq for c in chunks] == list(range(len(chunks)))


@settings(max_examples=40, deadline=None)
@given(
    wav=st.booleans(),
    values=st.lists(st.integers(-32768, 32767), max_size=900),
    cuts=st.lists(st.integers(0, 2000), max_size=8),
)
def test_mono_pcm16_chunks_keep_the_client_bytes(wav: bool, values: list[int], cuts: list[int]) -> None:
    body = s16(*values)
    data = wav_bytes(body) if wav else body
    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    fmt = AudioFormat(encoding="wav" if wav else "pcm_s16le")
    out, done = run(decode(fmt), [RawAudio(data[a:b]) for a, b in itertools.pairwise(points)])
    chunks = [f for f in out if isinstance(f, AudioChunk)]
    assert done and all(isinstance(c, Pcm16Chunk) for c in chunks)
    assert b"".join(c.pcm for c in chunks) == body  # type: ignore[attr-defined]
    np.testing.assert_array_equal(audio(out), np.array(values, np.float32) / 32768)
    for c in chunks:
        assert isinstance(c, Pcm16Chunk)
        np.testing.assert_array_equal(c.samples, np.frombuffer(c.pcm, "<i2") / np.float32(32768))
        assert float_to_pcm16(c.samples) == c.pcm  # the inverse vad_gate uses on float-only chunks
    other, _ = run(decode(AudioFormat(encoding="pcm_s16le", channels=2)), [RawAudio(s16(1, 2, 3, 4))])
    assert [type(f) for f in other] == [AudioChunk]


def test_pcm16_chunk_makes_its_float_samples_on_first_read() -> None:
    pcm = s16(0, 1, -1, 32767, -32768, 12345)
    lazy = Pcm16Chunk(None, 16000, 0.5, 3, pcm)  # type: ignore[arg-type]  # as decode makes them
    eager = Pcm16Chunk(np.frombuffer(pcm, "<i2") / np.float32(32768), 16000, 0.5, 3, pcm)
    assert lazy.duration == eager.duration == 6 / 16000 and lazy.end == eager.end
    x = lazy.samples
    assert x is lazy.samples  # made once, then kept
    assert x.dtype == np.float32 and not x.flags.writeable and not eager.samples.flags.writeable
    np.testing.assert_array_equal(x, eager.samples)
    assert summary(lazy) == summary(eager) and "samples=array" in repr(lazy)


@settings(max_examples=80, deadline=None)
@given(
    encoding=st.sampled_from(["pcm_s16le", "pcm_f32le", "wav"]),
    blobs=st.lists(st.binary(max_size=300), max_size=8),
    riff=st.booleans(),
)
def test_garbage_never_raises_out_of_the_operator(encoding: str, blobs: list[bytes], riff: bool) -> None:
    if riff and blobs:  # get past the magic now and then
        blobs[0] = b"RIFF\x00\x00\x00\x00WAVE" + blobs[0]
    out, done = run(decode(AudioFormat(encoding=encoding)), [RawAudio(b) for b in blobs])  # type: ignore[arg-type]
    assert done
    for f in out:
        assert isinstance(f, ErrorEvent | AudioChunk)
        if isinstance(f, AudioChunk):
            assert np.all(np.abs(f.samples) <= 1.0)


def test_other_frames_pass_untouched() -> None:
    s = SpeechStarted(t=1.0)
    out, _ = run(decode(AudioFormat()), [s, RawAudio(b""), s])
    assert out == [s, s] and out[0] is s


# ------------------------------------------------------------------ decode_file (PCM / WAV)


def test_decode_file_raw_and_wav() -> None:
    x, rate = decode_file(s16(16384, -16384), "pcm_s16le", sample_rate=8000, rate=8000)
    assert rate == 8000
    np.testing.assert_allclose(x, [0.5, -0.5])
    x, rate = decode_file(wav_bytes(s16(1, 2), rate=44100), "wav", rate=44100)
    assert rate == 44100 and len(x) == 2
    x, rate = decode_file(wav_bytes(s16(*[100] * 4410), rate=44100), "wav")  # resampled to 16 kHz
    assert rate == 16000 and len(x) == 1600
    for data, encoding in [(b"", "auto"), (s16(1) + b"\x00", "pcm_s16le"), (b"RIFF", "wav"), (b"xx", "aiff")]:
        with pytest.raises(ValueError):
            decode_file(data, encoding)
    x, _ = decode_file(s16(1) + b"\x00", "pcm_s16le", strict=False)
    assert len(x) == 1
