"""vad_gate with ``engine="silero"`` (Silero VAD v5, the real model): where utterances open and
close on real and synthetic speech, that noise and music leave it shut where webrtcvad opens,
that scoring sessions together in one event-loop tick changes nothing, a live engine switch, a
missing model, and that a closed session leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from reactivex.subject import Subject

from asrhub.config import SessionConfig, VadConfig
from asrhub.errors import HubError
from asrhub.flow import Pending
from asrhub.frames import AudioChunk, Frame, SessionUpdated, SpeechEnded, SpeechStarted
from asrhub.operators._vad_silero import SETUP_HINT, SileroClassifier, SileroModel, SileroVad
from asrhub.operators.vad_gate import vad_gate
from tests.audio_utils import fixture, fixture_entry, load_wav, resample, room_noise, tones

from .frame_utils import chunks_of, run

RATE = 16_000
ALSA = sorted(p for p in Path("/usr/share/sounds/alsa").glob("*.wav") if p.name != "Noise.wav")


@pytest.fixture(scope="module")
def silero() -> SileroVad:
    return SileroVad()


def edges(out: list[Frame]) -> list[tuple[str, float]]:
    return [(type(f).__name__, f.t) for f in out if isinstance(f, SpeechStarted | SpeechEnded)]


def utterances(out: list[Frame]) -> list[tuple[float, float]]:
    e = edges(out)
    assert [k for k, _ in e] == ["SpeechStarted", "SpeechEnded"] * (len(e) // 2), e
    return [(e[i][1], e[i + 1][1]) for i in range(0, len(e), 2)]


def test_silero_opens_and_closes_on_the_fixture_segments(silero: SileroVad) -> None:
    x, rate = load_wav(fixture("silences.wav"))
    out, done = run(vad_gate(engine="silero", silero=silero), chunks_of(x, rate, rate // 10))
    assert done
    found = utterances(out)
    expected = [(s["start"], s["end"]) for s in fixture_entry("silences.wav")["segments"]]
    assert len(found) == len(expected), found
    for (start, end), (s, e) in zip(found, expected, strict=True):
        assert s - 0.1 <= start <= s + 0.15 and e - 0.15 <= end <= e + 0.15, (found, expected)


@pytest.mark.parametrize("path", ALSA, ids=lambda p: p.stem)
def test_silero_one_utterance_per_real_recording(silero: SileroVad, path: Path) -> None:
    """The alsa-utils recordings (a real voice saying a channel name) between room tone: one
    utterance, from within 150 ms of the first loud 20 ms frame to within 250 ms of the last."""
    voice, rate = load_wav(path)
    voice = resample(voice, rate, RATE).astype(np.float32)
    pad = room_noise(1.0, rate=RATE, level_db=-55)
    x = np.concatenate([pad, voice, pad])
    frames = x[: len(x) // 320 * 320].reshape(-1, 320)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - 25)
    first, last = loud[0] * 0.02, (loud[-1] + 1) * 0.02
    out, _ = run(vad_gate(engine="silero", silero=silero), chunks_of(x, RATE, 1600))
    ((start, end),) = utterances(out)
    assert first - 0.15 <= start <= first + 0.15 and last - 0.25 <= end <= last + 0.25, (
        start,
        end,
        first,
        last,
    )


@pytest.mark.parametrize("name", ["music", "alsa noise"])
def test_silero_stays_shut_on_music_and_noise_where_webrtc_opens(silero: SileroVad, name: str) -> None:
    if name == "music":
        x = tones(10.0)
    else:  # the pink noise of alsa-utils' speaker test, 48 kHz, looped to 4 s
        noise, rate = load_wav("/usr/share/sounds/alsa/Noise.wav")
        x = np.tile(resample(noise, rate, RATE).astype(np.float32), 3)
    chunks = chunks_of(x, RATE, 1600)
    webrtc, _ = run(vad_gate(engine="webrtc"), chunks)
    shut, _ = run(vad_gate(engine="silero", threshold=0.5, silero=silero), chunks)
    assert len(utterances(webrtc)) >= 1  # the contrast: webrtcvad calls it speech
    assert utterances(shut) == []
    assert not any(isinstance(f, AudioChunk) for f in shut)


def test_silero_at_8_and_48_khz(silero: SileroVad) -> None:
    x, rate = load_wav(fixture("weather_question.wav"))
    spans = {}
    for target in (8000, 16000, 48000):
        y = resample(x, rate, target).astype(np.float32)
        out, _ = run(vad_gate(engine="silero", silero=silero), chunks_of(y, target, target // 10))
        spans[target] = utterances(out)
    assert len(spans[16000]) == 1
    for target in (8000, 48000):
        ((start, end),) = spans[target]
        ((s, e),) = spans[16000]
        assert abs(start - s) <= 0.1 and abs(end - e) <= 0.1, spans


async def until(condition: Callable[[], bool], within_s: float = 60.0) -> None:
    """Wait (polling the loop) until ``condition`` holds; fail after ``within_s``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_batched_off_the_loop_equals_one_call_per_window(silero: SileroVad) -> None:
    """Eight sessions fed on a running loop (their windows scored in shared calls off the
    loop, flights overlapping the feeding) give the events and audio each gets alone, with
    every frame in order and the completion last."""
    x, rate = load_wav(fixture("silences.wav"))
    streams = [chunks_of(np.roll(x, 7919 * i), rate, 800 + 160 * i) for i in range(8)]
    alone = [run(vad_gate(engine="silero", silero=silero), s)[0] for s in streams]

    async def together() -> list[list[Frame]]:
        outs: list[list[Frame]] = [[] for _ in streams]
        done: list[bool] = []
        subjects: list[Subject[Frame]] = [Subject() for _ in streams]
        for subject, out in zip(subjects, outs, strict=True):
            subject.pipe(vad_gate(engine="silero", silero=silero)).subscribe(
                out.append, on_completed=lambda: done.append(True)
            )
        for r in range(max(len(s) for s in streams)):
            for subject, stream in zip(subjects, streams, strict=True):
                if r < len(stream):
                    subject.on_next(stream[r])
            if r % 3 == 0:
                await asyncio.sleep(0)  # some flights carry one chunk per session, some more
        for subject in subjects:
            subject.on_completed()
        await until(lambda: len(done) == len(streams))
        return outs

    batcher = silero.batcher()
    before = batcher.batches
    batched = asyncio.run(together())
    assert batcher.batches > before and batcher.windows / batcher.batches > 1
    for a, b in zip(alone, batched, strict=True):
        assert edges(a) == edges(b) and len(edges(a)) >= 8
        audio = [(f.start, len(f.samples)) for f in a if isinstance(f, AudioChunk)]
        assert audio == [(f.start, len(f.samples)) for f in b if isinstance(f, AudioChunk)]


def test_a_session_waiting_for_the_model_holds_its_feed(silero: SileroVad) -> None:
    """More than MAX_WAITING_S of one session's audio behind a flight: ``pending`` is held
    (``feed`` waits), and released once the flight landed."""
    x, rate = load_wav(fixture("weather_question.wav"))
    chunks = chunks_of(x, rate, rate // 10)
    pending = Pending(3)
    held: list[bool] = []

    async def feed() -> None:
        out: list[Frame] = []
        subject: Subject[Frame] = Subject()
        subject.pipe(vad_gate(engine="silero", silero=silero, pending=pending)).subscribe(out.append)
        for chunk in chunks[:15]:  # 1.5 s in one tick
            subject.on_next(chunk)
        held.append(pending.held)
        await until(lambda: silero.batcher().idle and not pending.held)
        assert any(isinstance(f, SpeechStarted) for f in out)

    asyncio.run(feed())
    assert held == [True] and not pending.held


def updated(vad: VadConfig) -> SessionUpdated:
    config = SessionConfig(vad=vad)
    return SessionUpdated(config=config.to_dict(), settings=config)


def test_engine_switch_holds_from_the_next_utterance(silero: SileroVad) -> None:
    """webrtc → silero sent mid-utterance: that utterance ends as webrtc decides, and music after
    it (which webrtc calls speech) opens nothing; silero → webrtc: the music opens again."""
    speech, rate = load_wav(fixture("weather_question.wav"))
    x = np.concatenate([speech, np.zeros(RATE, np.float32), tones(4.0)])
    chunks = chunks_of(x, RATE, 1600)
    assert rate == RATE
    webrtc, _ = run(vad_gate(engine="webrtc", silero=silero), chunks)
    mid = 15  # 1.5 s: inside the utterance
    switched, _ = run(
        vad_gate(engine="webrtc", silero=silero),
        [*chunks[:mid], updated(VadConfig(engine="silero")), *chunks[mid:]],
    )
    assert len(utterances(webrtc)) >= 2  # the speech, then the music
    assert utterances(switched) == utterances(webrtc)[:1]  # the same first utterance, no music
    back, _ = run(
        vad_gate(engine="silero", silero=silero),
        [*chunks[:mid], updated(VadConfig(engine="webrtc")), *chunks[mid:]],
    )
    assert len(utterances(back)) >= 2


def test_missing_model_refuses_with_the_setup_hint(tmp_path: Path) -> None:
    with pytest.raises(HubError) as caught:
        vad_gate(engine="silero", silero=SileroVad(tmp_path / "silero_vad.onnx"))
    assert caught.value.code == "provider_failed" and caught.value.fatal
    assert "setup.sh" in str(caught.value) and SETUP_HINT in str(caught.value)
    vad_gate(engine="webrtc", silero=SileroVad(tmp_path / "silero_vad.onnx"))  # webrtc needs no model


def test_closed_sessions_leave_nothing_behind(silero: SileroVad) -> None:
    """Sessions disposed while their chunks wait for the tick's batch: the batch lets them go,
    and no Silero state outlives them."""
    x, _ = load_wav(fixture("weather_question.wav"))
    chunks = chunks_of(x, RATE, 1600)

    def live() -> int:
        gc.collect()
        return sum(isinstance(o, SileroClassifier) for o in gc.get_objects())

    async def sessions() -> None:
        subs = []
        for _ in range(20):
            subject: Subject[Frame] = Subject()
            subs.append(
                (subject, subject.pipe(vad_gate(engine="silero", silero=silero)).subscribe(lambda _f: None))
            )
        for chunk in chunks[:12]:
            for subject, _ in subs:
                subject.on_next(chunk)
            await asyncio.sleep(0)
        for subject, _ in subs:
            subject.on_next(chunks[12])  # waiting for the next tick's batch
        for _, sub in subs:
            sub.dispose()
        await until(lambda: silero.batcher().idle)

    before = live()
    asyncio.run(sessions())
    assert live() == before


class FakeFailingModel(SileroModel):
    """The real model, except that a batched call (a flight) fails: injects an engine fault."""

    def run(self, x: np.ndarray, state: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
        if len(x) > 1:
            raise RuntimeError("onnxruntime failed")
        return super().run(x, state, rate)


def test_a_failed_flight_ends_its_sessions_with_the_error(silero: SileroVad) -> None:
    """The model failing off the loop reaches every session of that flight as ``on_error`` (no
    hang, nothing waiting), and the batcher serves the next flight."""
    failing = SileroVad()
    failing._model = FakeFailingModel(silero.model().session)
    x, rate = load_wav(fixture("weather_question.wav"))
    chunks = chunks_of(x, rate, rate // 10)

    async def sessions() -> list[BaseException]:
        errors: list[BaseException] = []
        subjects: list[Subject[Frame]] = [Subject() for _ in range(3)]
        for subject in subjects:
            subject.pipe(vad_gate(engine="silero", silero=failing)).subscribe(lambda _f: None, errors.append)
        for subject in subjects:
            subject.on_next(chunks[0])
        await until(lambda: len(errors) == 3 and failing.batcher().idle)
        return errors

    errors = asyncio.run(sessions())
    assert all("onnxruntime failed" in str(e) for e in errors)
