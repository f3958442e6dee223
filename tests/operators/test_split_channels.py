"""split_channels: interleaved PCM and WAV cut into one chain per channel, sample-exact whatever
the cuts of the byte stream; events tagged with their channel; a WAV with too many channels
refused; every chain completed, and every chain disposed with the operator."""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np
import reactivex
from reactivex import operators as ops
from reactivex.subject import Subject

from asrhub.config import AudioFormat
from asrhub.frames import AudioChunk, ErrorEvent, FinalTranscript, RawAudio, SessionUpdated, SpeechStarted
from asrhub.operators.decode import decode
from asrhub.operators.split_channels import split_channels
from asrhub.plugin import Operator

from .frame_utils import run

RATE = 16_000


def stereo(n: int = 4000, channels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(-20000, 20000, size=(n, channels), dtype=np.int16)


def chains(log: list[str]) -> Any:
    """Each channel: decode, then (channel, frame) pairs; subscriptions and disposals logged."""

    def build(i: int, fmt: AudioFormat) -> Operator:
        assert fmt.channels == 1
        return reactivex.compose(
            decode(fmt),
            ops.map(lambda f: f if isinstance(f, ErrorEvent | SessionUpdated) else (i, f)),
            ops.do_action(on_completed=lambda: log.append(f"done {i}")),
            ops.finally_action(lambda: log.append(f"disposed {i}")),
        )

    return build


def per_channel(out: list[Any], channels: int) -> list[np.ndarray]:
    got = []
    for c in range(channels):
        parts = [
            f.samples
            for i, f in (x for x in out if isinstance(x, tuple))
            if i == c and isinstance(f, AudioChunk)
        ]
        got.append(np.concatenate(parts))
    return got


def test_raw_pcm_every_channel_sample_exact_across_odd_cuts() -> None:
    x = stereo()
    data = x.tobytes()
    cuts = [RawAudio(data[i : i + 777]) for i in range(0, len(data), 777)]  # cuts inside sample frames
    log: list[str] = []
    fmt = AudioFormat(encoding="pcm_s16le", sample_rate=RATE, channels=2)
    out, completed = run(split_channels(fmt, build=chains(log), max_channels=8), cuts)
    assert completed and sorted(log) == ["disposed 0", "disposed 1", "done 0", "done 1"]
    for c, samples in enumerate(per_channel(out, 2)):
        np.testing.assert_allclose(samples, x[:, c] / 32768.0, atol=1e-6)


def test_events_are_tagged_and_channel_free_ones_come_once() -> None:
    def build(i: int, _fmt: AudioFormat) -> Operator:
        def chain(source: reactivex.Observable[Any]) -> reactivex.Observable[Any]:
            return source.pipe(
                ops.filter(lambda f: not isinstance(f, RawAudio)),
                ops.concat(
                    reactivex.of(SpeechStarted(t=float(i)), FinalTranscript(0, f"side {i}", 0, 1, "p"))
                ),
            )

        return chain

    fmt = AudioFormat(encoding="pcm_s16le", channels=3)
    update = SessionUpdated(config={})
    out, completed = run(split_channels(fmt, build=build, max_channels=8), [update, RawAudio(bytes(12))])
    assert completed and out.count(update) == 1
    finals = [f for f in out if isinstance(f, FinalTranscript)]
    assert sorted((f.channel, f.text) for f in finals) == [(0, "side 0"), (1, "side 1"), (2, "side 2")]
    assert sorted(f.channel for f in out if isinstance(f, SpeechStarted)) == [0, 1, 2]


def wav(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def test_wav_header_names_the_channels_and_too_many_are_refused() -> None:
    x = stereo(channels=3)
    data = wav(x)
    log: list[str] = []
    op = split_channels(AudioFormat(encoding="wav"), build=chains(log), max_channels=8)
    out, completed = run(op, [RawAudio(data[i : i + 30]) for i in range(0, len(data), 30)])  # header cut up
    assert completed
    for c, samples in enumerate(per_channel(out, 3)):
        np.testing.assert_allclose(samples, x[:, c] / 32768.0, atol=1e-6)
    refused, completed = run(
        split_channels(AudioFormat(encoding="wav"), build=chains([]), max_channels=2), [RawAudio(data)]
    )
    (error,) = refused
    assert completed and isinstance(error, ErrorEvent) and error.fatal and error.code == "bad_audio"
    assert "at most 2" in error.message


def test_disposing_disposes_every_channel_chain() -> None:
    log: list[str] = []
    source: Subject[Any] = Subject()
    fmt = AudioFormat(encoding="pcm_s16le", channels=4)
    sub = source.pipe(split_channels(fmt, build=chains(log), max_channels=8)).subscribe(lambda _f: None)
    source.on_next(RawAudio(stereo(100, 4).tobytes()))
    sub.dispose()
    assert sorted(log) == [f"disposed {i}" for i in range(4)]


async def test_a_channel_releases_only_its_own_hold() -> None:
    """Two channels' VADs (or Vosk streams) hold the session's feed under the same name; one
    catching up must not let the client past the other's bound."""
    from asrhub.flow import Pending, PendingPart

    session = Pending(limit=3)
    left, right = PendingPart(session, "channel 0"), PendingPart(session, "channel 1")
    left.hold("vad_gate")
    right.hold("vad_gate")
    left.unhold("vad_gate")
    assert not session.ready and not right.ready  # channel 1 still holds
    right.unhold("vad_gate")
    assert session.ready
    left.acquire()
    right.acquire()
    assert session.count == right.count == 2  # utterances count for the session
    left.release()
    right.release()
    await right.wait_ready()
