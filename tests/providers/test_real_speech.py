"""Real human speech: the voice recordings Debian's alsa-utils ships for ``speaker-test``
(/usr/share/sounds/alsa/*.wav: a man saying "Front left", "Rear center", …, 48 kHz mono;
GPL-2, see /usr/share/doc/alsa-utils/copyright). scripts/setup.sh installs the package; the
files are read where it puts them, never copied into the repository.

Short, but real: a microphone, a room, a human voice — what the synthetic fixtures are not.
Measured with tiny.en: 1 error in 16 words ("Rear right" → "We're right").
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from asrhub.frames import FinalTranscript
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import load_wav, wer

from .conftest import finals, make_hub, run_session

SOUNDS = Path("/usr/share/sounds/alsa")
SPOKEN = {
    "Front_Center.wav": "front center",
    "Front_Left.wav": "front left",
    "Front_Right.wav": "front right",
    "Rear_Center.wav": "rear center",
    "Rear_Left.wav": "rear left",
    "Rear_Right.wav": "rear right",
    "Side_Left.wav": "side left",
    "Side_Right.wav": "side right",
}
MAX_WER = 0.15  # over all 16 words; tiny.en: 0.0625


def recording(name: str) -> np.ndarray:
    path = SOUNDS / name
    assert path.exists(), "run scripts/setup.sh (it installs alsa-utils, which ships the recordings)"
    samples, rate = load_wav(path)
    assert rate == 48_000
    return samples


def at_16k(samples: np.ndarray) -> np.ndarray:
    return resample_poly(samples, 1, 3).astype(np.float32)


async def test_whisper_on_each_recording(whisper: WhisperProvider) -> None:
    refs, hyps = [], []
    for name, text in SPOKEN.items():
        result = await whisper.transcribe(at_16k(recording(name)), language="en")
        refs.append(text)
        hyps.append(result.text)
    print("\nreal speech (alsa-utils), whisper tiny.en:", list(zip(refs, hyps, strict=True)))
    assert wer(" ".join(refs), " ".join(hyps)) <= MAX_WER, hyps


async def test_a_48khz_stream_of_all_recordings_through_a_session(whisper: WhisperProvider) -> None:
    """The eight recordings one after another with a second of room noise between them, sent
    as 48 kHz PCM: the hub's resampler, VAD and segmenter on a real voice, one final each.
    At the default VAD aggressiveness (2) webrtcvad takes these recordings' noise floor for
    speech and merges them into three finals (words all right); 3 separates them."""
    gap = (np.random.default_rng(7).standard_normal(48_000) * 10 ** (-60 / 20)).astype(np.float32)
    stream = np.concatenate([part for name in SPOKEN for part in (recording(name), gap)])
    hub = make_hub({"whisper": whisper})
    config = {"language": "en", "audio": {"sample_rate": 48_000}, "vad": {"aggressiveness": 3}}
    got: list[FinalTranscript] = finals(await run_session(hub, stream, config))
    texts = [f.text for f in got if f.text.strip()]
    assert len(texts) == len(SPOKEN), texts
    assert wer(" ".join(SPOKEN.values()), " ".join(texts)) <= MAX_WER, texts
    assert all(a.end <= b.start for a, b in itertools.pairwise(got))


async def test_the_noise_recording_has_no_words(whisper: WhisperProvider) -> None:
    """Noise.wav (the same set's pink noise): an engine that hears words in it hallucinates."""
    result = await whisper.transcribe(at_16k(recording("Noise.wav")), language="en")
    assert result.text.strip() == "", result.text
