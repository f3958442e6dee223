"""wakeword: real openWakeWord models on real speech (piper fixtures), clean and at 20 dB SNR.

Needs the models unpacked by ``bash scripts/setup.sh`` (a missing model is a failure, not a skip).
"""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reactivex
from hypothesis import given, settings
from hypothesis import strategies as st
from reactivex import Observable
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler
from reactivex.testing.marbles import marbles_testing

from asrhub.errors import HubError
from asrhub.frames import AudioChunk, ErrorEvent, Frame, SpeechStarted, WakeWordDetected
from asrhub.operators import wakeword_models
from asrhub.operators.wakeword import Detector, wakeword
from asrhub.operators.wakeword_models import WakewordModels, model_dir
from tests.audio_utils import add_noise, load_wav

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RATE = 16_000
WAKE_SPAN = (1.3, 2.3)
"""Where 'hey jarvis' ends in hey_jarvis_weather.wav (speech 1.0–3.15 s): the detection's t."""


MODELS = WakewordModels()
"""The models every test of this module shares, as a hub's sessions do."""


def clip_of(name: str, snr_db: float | None = None, color: str = "pink") -> np.ndarray:
    samples, rate = load_wav(FIXTURES / f"{name}.wav")
    assert rate == RATE
    return samples if snr_db is None else add_noise(samples, snr_db, seed=7, color=color)


def chunks(samples: np.ndarray, sizes: list[int] | int, start: float = 0.0) -> list[AudioChunk]:
    out, pos, i = [], 0, 0
    while pos < len(samples):
        n = sizes if isinstance(sizes, int) else sizes[i % len(sizes)]
        out.append(AudioChunk(samples[pos : pos + n].copy(), RATE, start + pos / RATE, i))
        pos, i = pos + n, i + 1
    return out


def run(frames: list[Frame], **kwargs: Any) -> list[Frame]:
    out: list[Frame] = []
    source: Observable[Frame] = reactivex.from_iterable(frames)
    source.pipe(wakeword(**{"names": ["hey_jarvis"], "models": MODELS, **kwargs})).subscribe(out.append)
    return out


def detections(frames: list[Frame]) -> list[WakeWordDetected]:
    return [f for f in frames if isinstance(f, WakeWordDetected)]


# ---------------------------------------------------------------------------------- real speech


@pytest.mark.parametrize("noise", [None, ("pink", 20.0), ("white", 20.0)], ids=["clean", "pink20", "white20"])
def test_hey_jarvis_gives_exactly_one_detection_after_the_wake_word(noise: tuple[str, float] | None) -> None:
    samples = clip_of("hey_jarvis_weather", *(reversed(noise) if noise else ()))
    found = detections(run(chunks(samples, 320)))
    assert len(found) == 1, found
    assert found[0].name == "hey_jarvis" and found[0].score >= 0.5
    assert WAKE_SPAN[0] <= found[0].t <= WAKE_SPAN[1]


@pytest.mark.parametrize("noise", [None, ("pink", 20.0), ("white", 20.0)], ids=["clean", "pink20", "white20"])
@pytest.mark.parametrize("name", ["no_wake_weather", "weather_question", "silences", "long_40s"])
def test_speech_without_the_wake_word_gives_no_detection(name: str, noise: tuple[str, float] | None) -> None:
    samples = clip_of(name, *(reversed(noise) if noise else ()))
    assert detections(run(chunks(samples, 480))) == []


def test_several_names_fire_independently_in_stream_order() -> None:
    # openWakeWord's "weather" model spots the word "weather" in the command
    found = detections(run(chunks(clip_of("hey_jarvis_weather"), 1000), names=["weather", "hey_jarvis"]))
    assert [f.name for f in found] == ["hey_jarvis", "weather"]
    assert found[0].t < found[1].t


def test_each_utterance_of_the_wake_word_fires_once() -> None:
    once = clip_of("hey_jarvis_weather")
    found = detections(run(chunks(np.concatenate([once, once]), 640)))
    assert len(found) == 2 and found[0].t == 1.76
    assert abs(found[1].t - (len(once) / RATE + 1.76)) <= 0.08  # one 80 ms step (the grid shifts)


def test_a_dip_below_threshold_within_the_refractory_period_does_not_fire_again() -> None:
    detector = Detector(MODELS.features(), MODELS.wake(["hey_jarvis"]), 0.5, refractory_s=1.0)
    scores = [0.1, 0.9, 0.95, 0.2, 0.8, 0.9, 0.1] + [0.0] * 12 + [0.7, 0.9]
    fired = [step for step, s in enumerate(scores, 10) if detector._check(step, "hey_jarvis", s)]
    assert fired == [11, 29]  # 12.5 steps = 1 s; the re-crossing at step 14 is the same utterance


def test_detection_time_counts_from_the_first_chunk_start() -> None:
    found = detections(run(chunks(clip_of("hey_jarvis_weather"), 640, start=100.0)))
    assert len(found) == 1 and 100 + WAKE_SPAN[0] <= found[0].t <= 100 + WAKE_SPAN[1]


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(1, 40_000), min_size=1, max_size=6))
def test_the_result_does_not_depend_on_chunk_sizes(sizes: list[int]) -> None:
    found = detections(run(chunks(clip_of("hey_jarvis_weather"), sizes)))
    assert [(f.name, f.t) for f in found] == [("hey_jarvis", 1.76)]


def test_scores_match_the_openwakeword_reference_implementation() -> None:
    """Our streaming front end over shared sessions computes what openwakeword.Model computes."""
    from openwakeword.model import Model

    d = model_dir()
    reference = Model(
        wakeword_models=[str(d / "hey_jarvis_v0.1.onnx")],
        inference_framework="onnx",
        melspec_model_path=str(d / "melspectrogram.onnx"),
        embedding_model_path=str(d / "embedding_model.onnx"),
    )
    samples = clip_of("hey_jarvis_weather")
    pcm = np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)
    expected = [
        reference.predict(pcm[i : i + 1280])["hey_jarvis_v0.1"] for i in range(0, len(pcm) - 1279, 1280)
    ]
    detector = Detector(MODELS.features(), MODELS.wake(["hey_jarvis"]), 0.5, 1.5)
    got = [s for c in chunks(samples, 1280) for _step, _name, s in detector.scores(c)]
    # the first 16 steps differ only by the (random) feature history both start from
    np.testing.assert_allclose(got[16 : len(expected)], expected[16:], atol=1e-4)
    assert max(expected) > 0.9


# ---------------------------------------------------------------------------------- stream rules


def test_audio_passes_untouched_and_each_detection_follows_its_audio() -> None:
    frames = chunks(clip_of("hey_jarvis_weather"), 800)
    marker = SpeechStarted(0.5)
    scheduler = TestScheduler()
    source = scheduler.create_cold_observable(
        *[ReactiveTest.on_next(10 * (i + 1), f) for i, f in enumerate([*frames[:10], marker, *frames[10:]])],
        ReactiveTest.on_completed(10 * (len(frames) + 2)),
    )
    results = scheduler.start(
        lambda: source.pipe(wakeword(names=["hey_jarvis"], models=MODELS)), disposed=100_000
    )
    values = [r.value.value for r in results.messages if r.value.kind == "N"]
    assert results.messages[-1].value.kind == "C"
    passed = [v for v in values if not isinstance(v, WakeWordDetected)]
    assert len(passed) == len(frames) + 1 and all(
        a is b for a, b in zip(passed, [*frames[:10], marker, *frames[10:]], strict=True)
    )
    at = next(i for i, v in enumerate(values) if isinstance(v, WakeWordDetected))
    detection, before = values[at], values[at - 1]
    assert isinstance(before, AudioChunk) and before.start < detection.t <= before.end
    tick = {id(r.value.value): r.time for r in results.messages if r.value.kind == "N"}
    assert tick[id(detection)] == tick[id(before)]  # emitted in the same on_next as its chunk


def test_errors_and_completion_pass_through() -> None:
    with marbles_testing(timespan=1) as (start, cold, _hot, exp):
        error = ErrorEvent(code="bad_audio", message="odd bytes")
        source: Observable[Frame] = cold("-e-#", {"e": error}, ValueError("boom"))
        results = start(source.pipe(wakeword(names=["hey_jarvis"], models=MODELS)))
        assert results == exp("-e-#", {"e": error}, ValueError("boom"))


def test_audio_at_another_rate_is_a_fatal_error() -> None:
    errors: list[Exception] = []
    frame = AudioChunk(np.zeros(800, np.float32), 8000, 0.0, 0)
    reactivex.just(frame).pipe(wakeword(names=["hey_jarvis"], models=MODELS)).subscribe(
        on_error=errors.append
    )
    assert isinstance(errors[0], HubError) and errors[0].code == "bad_audio"


class FakeBrokenModel:
    """Fault injection: a wake-word classifier whose engine raises."""

    name, window = "hey_jarvis", 16

    def score(self, features: np.ndarray) -> float:
        raise RuntimeError("onnxruntime exploded")


class FakeBrokenModels(WakewordModels):
    """The real feature models with the broken classifier."""

    def wake(self, names: tuple[str, ...] | list[str]) -> list[Any]:
        return [FakeBrokenModel()]


def test_an_engine_fault_ends_the_session_with_provider_failed() -> None:
    errors: list[Exception] = []
    source: Observable[Frame] = reactivex.from_iterable(chunks(clip_of("quick_fox"), 1280))
    source.pipe(wakeword(names=["hey_jarvis"], models=FakeBrokenModels())).subscribe(on_error=errors.append)
    assert isinstance(errors[0], HubError) and errors[0].code == "provider_failed"
    assert "exploded" in errors[0].message


# ---------------------------------------------------------------------------------- models


def test_models_are_loaded_once_and_shared_but_state_is_per_session() -> None:
    assert MODELS.wake(["hey_jarvis"])[0] is MODELS.wake(["hey_jarvis", "alexa"])[0]
    assert MODELS.features() is MODELS.features()
    one, two = (chunks(clip_of(n), 640) for n in ("hey_jarvis_weather", "no_wake_weather"))
    op = wakeword(names=["hey_jarvis"], models=MODELS)
    inputs: tuple[Subject[Frame], Subject[Frame]] = (Subject(), Subject())
    outs: tuple[list[Frame], list[Frame]] = ([], [])
    for subject, out in zip(inputs, outs, strict=True):
        subject.pipe(op).subscribe(out.append)
    for a, b in zip_longest(one, two):  # interleaved, as two live sessions would be
        for subject, frame in zip(inputs, (a, b), strict=True):
            if frame is not None:
                subject.on_next(frame)
    assert [f.t for f in detections(outs[0])] == [1.76]
    assert detections(outs[1]) == []


def test_an_unknown_name_is_refused_with_the_available_names() -> None:
    with pytest.raises(HubError) as info:
        wakeword(names=["hey_siri"], threshold=0.5, models=MODELS)
    assert info.value.code == "bad_message" and info.value.fatal
    assert "'hey_siri'" in info.value.message and "hey_jarvis" in info.value.message
    assert "alexa" in info.value.message


def test_missing_models_say_how_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ASRHUB_MODEL_DIR", str(tmp_path))
    with pytest.raises(HubError) as info:
        wakeword(names=["hey_jarvis"])  # models of its own: nothing loaded yet
    assert "scripts/setup.sh" in info.value.message and str(tmp_path) in info.value.message
    with pytest.raises(HubError) as info:
        WakewordModels().features()
    assert "melspectrogram.onnx" in info.value.message and "scripts/setup.sh" in info.value.message


def test_model_names_come_from_the_files() -> None:
    names = wakeword_models.available()
    assert {"alexa", "hey_jarvis", "hey_mycroft", "hey_rhasspy", "timer", "weather"} <= set(names)
    assert names["hey_jarvis"].name == "hey_jarvis_v0.1.onnx"
    assert "melspectrogram" not in names and "silero_vad" not in names


def test_a_bad_threshold_is_refused() -> None:
    with pytest.raises(HubError):
        wakeword(names=["hey_jarvis"], threshold=1.5, models=MODELS)
