"""decode for compressed streams (PyAV on a decoder thread): real encodes of a fixture streamed in
random-size frames, streaming before the end, ordering, truncated/corrupt data, disposal, bounds."""

from __future__ import annotations

import asyncio
import random
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex.subject import Subject

from asrhub.config import AudioFormat
from asrhub.errors import AudioTooLong
from asrhub.frames import AudioChunk, ErrorEvent, Frame, Pong, RawAudio
from asrhub.operators._bytefeed import ByteFeed
from asrhub.operators.decode import decode, decode_file
from tests.audio_utils import encode, fixture, load_wav, resample, rms

from .frame_utils import audio, run

SPEECH, RATE = load_wav(fixture("quick_fox.wav"))
# (encoding the client declares, tests/audio_utils.encode format)
FORMATS = [
    ("mp3", "mp3"),
    ("opus", "opus"),
    ("ogg", "opus"),
    ("webm", "webm"),
    ("webm", "live-webm"),
    ("flac", "flac"),
    ("auto", "mp3"),
    ("auto", "live-webm"),
]
_ENCODED: dict[str, bytes] = {}


def encoded(fmt: str) -> bytes:
    if fmt not in _ENCODED:
        _ENCODED[fmt] = live_webm(SPEECH, RATE) if fmt == "live-webm" else encode(SPEECH, RATE, fmt)
    return _ENCODED[fmt]


def live_webm(samples: np.ndarray, rate: int) -> bytes:
    """WebM/Opus as a browser's MediaRecorder streams it: written to a non-seekable sink in live
    mode, so clusters have unknown sizes and there is no Duration and no Cues."""
    import av

    class Sink:
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def write(self, b: bytes) -> int:
            self.parts.append(bytes(b))
            return len(b)

    sink = Sink()
    pcm = np.round(np.clip(resample(samples, rate, 48000), -1, 1) * 32767).astype(np.int16)
    with av.open(sink, "w", format="webm", options={"live": "1"}) as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        for i in range(0, len(pcm), 960):
            frame = av.AudioFrame.from_ndarray(pcm[i : i + 960].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 48000, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return b"".join(sink.parts)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2 + 7]


def corrupt(data: bytes) -> bytes:
    """Header intact; three runs of 64 random bytes in the middle half."""
    out = bytearray(data)
    rng = np.random.default_rng(3)
    for at in (len(data) * 3 // 8, len(data) // 2, len(data) * 5 // 8):
        out[at : at + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    return bytes(out)


async def stream(
    encoding: str, data: bytes, seed: int = 0, *, max_buffer_bytes: int = 8 << 20, marker: Frame | None = None
) -> list[Frame]:
    """Feed ``data`` in random-size frames (1..4000 bytes) on the running loop, then complete."""
    src: Subject[Frame] = Subject()
    out: list[Frame] = []
    done = asyncio.Event()
    fmt = AudioFormat(encoding=encoding)  # type: ignore[arg-type]
    sub = src.pipe(decode(fmt, max_buffer_bytes=max_buffer_bytes)).subscribe(
        out.append, on_completed=done.set
    )
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.randint(1, 4000)
        src.on_next(RawAudio(data[i : i + n]))
        i += n
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    if marker is not None:
        src.on_next(marker)
    src.on_completed()  # at once: completion must still follow every decoded sample
    await asyncio.wait_for(done.wait(), 20)
    sub.dispose()
    return out


@pytest.mark.parametrize(("encoding", "fmt"), FORMATS)
async def test_random_frames_decode_to_the_whole_signal(encoding: str, fmt: str) -> None:
    out = await stream(encoding, encoded(fmt), seed=len(encoding))
    errors = [f for f in out if isinstance(f, ErrorEvent)]
    assert not errors
    chunks = [f for f in out if isinstance(f, AudioChunk)]
    rate = chunks[0].sample_rate
    assert rate == 16000  # resampled on the decoder thread
    y = audio(out)
    assert abs(len(y) / rate - len(SPEECH) / RATE) < 0.03
    assert abs(rms(y) / rms(SPEECH) - 1) < 0.1
    assert np.max(np.abs(y)) <= 1.0
    counted = np.cumsum([0] + [len(c.samples) for c in chunks])
    assert [c.start for c in chunks] == [k / rate for k in counted[:-1]]
    assert [c.seq for c in chunks] == list(range(len(chunks)))


@pytest.mark.parametrize("fmt", ["webm", "live-webm", "mp3", "opus", "flac"])
async def test_audio_comes_out_while_the_stream_is_still_open(fmt: str) -> None:
    data = encoded(fmt)
    src: Subject[Frame] = Subject()
    out: list[Frame] = []
    encoding = "webm" if fmt == "live-webm" else fmt
    sub = src.pipe(decode(AudioFormat(encoding=encoding))).subscribe(out.append)  # type: ignore[arg-type]
    for i in range(0, len(data) * 3 // 4, 1000):
        src.on_next(RawAudio(data[i : i + 1000]))
        await asyncio.sleep(0.001)

    def decoded_s() -> float:  # the decoder thread delivers in steps: wait for it, don't sample it
        chunks = [f for f in out if isinstance(f, AudioChunk)]
        return sum(len(c.samples) for c in chunks) / chunks[0].sample_rate if chunks else 0.0

    for _ in range(1000):
        if decoded_s() > 0.5:
            break
        await asyncio.sleep(0.01)
    got = decoded_s()
    sub.dispose()
    assert 0.5 < got < len(SPEECH) / RATE  # a real part, before the end arrived


async def test_frames_that_pass_through_wait_behind_decoded_audio() -> None:
    marker = Pong(id="after")
    out = await stream("webm", encoded("webm"), marker=marker)
    # everything was decoded before the marker could pass, but the resampler's look-ahead (the
    # same < 1 ms a frame passing the resample operator may precede)
    after = out[out.index(marker) + 1 :]
    assert all(isinstance(f, AudioChunk) for f in after) and len(audio(after)) <= 16
    assert abs(len(audio(out)) / 16000 - len(SPEECH) / RATE) < 0.03


@pytest.mark.parametrize("fmt", ["mp3", "opus", "webm", "flac"])
@pytest.mark.parametrize("damage", [truncated, corrupt])
async def test_truncated_or_corrupt_streams_are_bad_audio(fmt: str, damage: object) -> None:
    out = await stream(fmt, damage(encoded(fmt)))  # type: ignore[operator]
    errors = [f for f in out if isinstance(f, ErrorEvent)]
    assert errors and {e.code for e in errors} == {"bad_audio"}
    assert not any(e.fatal for e in errors)
    assert 0.3 < len(audio(out)) / next(
        f.sample_rate for f in out if isinstance(f, AudioChunk)
    )  # what could be read


@pytest.mark.parametrize("fmt", ["mp3", "opus", "webm", "flac", "auto"])
async def test_garbage_and_a_cut_header_are_one_bad_audio(fmt: str) -> None:
    garbage = np.random.default_rng(1).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    for data in (garbage, encoded("mp3" if fmt == "auto" else fmt)[:40]):
        out = await stream(fmt, data)
        assert [type(f) for f in out] == [ErrorEvent] and out[0].code == "bad_audio"  # type: ignore[union-attr]
        assert type(out[0].message) is str  # type: ignore[union-attr]  # msgspec encodes no str subclass


async def test_dispose_stops_the_decoder_thread() -> None:
    before = {t.ident for t in threading.enumerate()}
    src: Subject[Frame] = Subject()
    out: list[Frame] = []
    sub = src.pipe(decode(AudioFormat(encoding="opus"))).subscribe(out.append)
    data = encoded("opus")
    src.on_next(RawAudio(data[: len(data) // 2]))
    await asyncio.sleep(0.05)
    threads = [
        t for t in threading.enumerate() if t.ident not in before and t.name.startswith("asrhub-decode")
    ]
    assert len(threads) == 1
    sub.dispose()
    threads[0].join(2)
    assert not threads[0].is_alive()
    n = len(out)
    src.on_next(RawAudio(data[len(data) // 2 :]))
    await asyncio.sleep(0.05)
    assert len(out) == n


async def test_a_frame_over_the_input_bound_is_too_large_and_dropped() -> None:
    data = encoded("webm")
    src: Subject[Frame] = Subject()
    out: list[Frame] = []
    done = asyncio.Event()
    op = decode(AudioFormat(encoding="webm"), max_buffer_bytes=64_000)
    src.pipe(op).subscribe(out.append, on_completed=done.set)
    for i in range(0, len(data), 1000):
        src.on_next(RawAudio(data[i : i + 1000]))
        if i == 5000:
            src.on_next(RawAudio(b"\xff" * 100_000))  # over the bound by itself: dropped, not decoded
        await asyncio.sleep(0.001)
    src.on_completed()
    await asyncio.wait_for(done.wait(), 20)
    assert [f.code for f in out if isinstance(f, ErrorEvent)] == ["too_large"]
    assert abs(len(audio(out)) / 16000 - len(SPEECH) / RATE) < 0.03


def test_the_byte_feed_refuses_what_would_overflow_and_keeps_order() -> None:
    markers: list[object] = []
    feed = ByteFeed(10, markers.append)
    assert feed.put(b"12345") and feed.put_marker("m") and not feed.put(b"123456") and feed.put(b"67890")
    feed.finish()
    assert feed.read(3) == b"123" and feed.read(100) == b"45" and markers == []
    assert feed.read(100) == b"67890" and markers == ["m"]
    assert feed.read(100) == b"" and feed.close() == [] and not feed.put_marker("late")


def test_without_an_event_loop_the_decoder_is_drained_at_completion() -> None:
    data = encoded("flac")
    out, done = run(
        decode(AudioFormat(encoding="flac")),
        [RawAudio(data[i : i + 3000]) for i in range(0, len(data), 3000)],
    )
    assert done and not [f for f in out if isinstance(f, ErrorEvent)]
    np.testing.assert_allclose(audio(out), SPEECH, atol=1e-4)  # FLAC is lossless


@settings(max_examples=15, deadline=None)
@given(
    fmt=st.sampled_from(["mp3", "opus", "webm", "flac", "auto"]),
    blobs=st.lists(st.binary(max_size=2000), max_size=5),
)
def test_random_bytes_never_raise_out_of_the_operator(fmt: str, blobs: list[bytes]) -> None:
    out, done = run(decode(AudioFormat(encoding=fmt)), [RawAudio(b) for b in blobs])  # type: ignore[arg-type]
    assert done and all(isinstance(f, ErrorEvent | AudioChunk) for f in out)


@pytest.mark.parametrize("fmt", ["mp3", "opus", "webm", "flac", "wav"])
def test_decode_file(fmt: str) -> None:
    data = encoded(fmt)
    x, rate = decode_file(data)
    assert abs(len(x) / rate - len(SPEECH) / RATE) < 0.03
    if fmt != "wav":
        for damaged in (truncated(data), corrupt(data), data[:40]):
            with pytest.raises(ValueError):
                decode_file(damaged, fmt)
        y, _ = decode_file(truncated(data), fmt, strict=False)
        assert 0 < len(y) < len(x)


def test_decode_file_bounds_the_decoded_length() -> None:
    with pytest.raises(AudioTooLong, match="the limit is 2 s"):  # declared: refused before decoding
        decode_file(encoded("flac"), max_s=2.0)


async def test_past_the_input_bound_a_session_feed_waits_instead_of_dropping() -> None:
    """Frames bigger than the bound, pushed as fast as ``feed`` allows: with the session's
    ``pending`` the decode operator takes each one and holds the writer back until the decoder
    drained, so nothing is dropped and no ``too_large`` is sent."""
    from asrhub.flow import Pending

    data = encoded("webm")
    pending = Pending(3)
    src: Subject[Frame] = Subject()
    out: list[Frame] = []
    done = asyncio.Event()
    op = decode(AudioFormat(encoding="webm"), max_buffer_bytes=4_000, pending=pending)
    src.pipe(op).subscribe(out.append, on_completed=done.set)
    held = 0
    for i in range(0, len(data), 16_000):  # every frame alone is four times the bound
        src.on_next(RawAudio(data[i : i + 16_000]))
        held += pending.held
        await pending.wait_ready()  # what Session.feed does
    src.on_completed()
    await asyncio.wait_for(done.wait(), 20)
    assert held >= 1  # the writer was held back
    assert [f for f in out if isinstance(f, ErrorEvent)] == []
    assert abs(len(audio(out)) / 16000 - len(SPEECH) / RATE) < 0.03  # every byte was decoded
    assert not pending.held


async def test_past_the_decoder_thread_bound_a_session_waits_for_a_free_one() -> None:
    """Decoder threads are bounded per hub (``limits.max_decoder_threads``): with one, a second
    compressed session is held (its ``feed`` waits: TCP backpressure) until the first one's
    thread has ended, then decodes all of its audio."""
    from asrhub.flow import Pending, Slots

    data = encoded("webm")
    slots = Slots(1)
    outs: list[list[Frame]] = [[], []]
    pendings = [Pending(3), Pending(3)]
    dones = [asyncio.Event(), asyncio.Event()]
    srcs: list[Subject[Frame]] = [Subject(), Subject()]
    for src, out, pending, done in zip(srcs, outs, pendings, dones, strict=True):
        op = decode(AudioFormat(encoding="webm"), pending=pending, slots=slots)
        src.pipe(op).subscribe(out.append, on_completed=done.set)
    srcs[0].on_next(RawAudio(data))
    srcs[1].on_next(RawAudio(data))
    assert slots.free == 0 and not pendings[0].held and pendings[1].held  # the second one waits
    srcs[0].on_completed()
    await asyncio.wait_for(dones[0].wait(), 20)
    await asyncio.wait_for(pendings[1].wait_ready(), 20)  # the first thread ended: its slot moved on
    srcs[1].on_completed()
    await asyncio.wait_for(dones[1].wait(), 20)
    for out in outs:
        assert abs(len(audio(out)) / 16000 - len(SPEECH) / RATE) < 0.03
        assert [f for f in out if isinstance(f, ErrorEvent)] == []
