"""The ``whisper`` provider through real hub sessions, against faster-whisper called directly.

Fixtures are the committed piper/espeak speech files (tests/fixtures/manifest.json); the
engine is the bundled tiny.en.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from asrhub.errors import HubError
from asrhub.frames import PartialTranscript
from asrhub.plugin import ProviderError, ProviderUnavailable
from asrhub.providers.whisper import WhisperProvider
from asrhub.providers.whisper_model import WhisperSettings, check, load_model
from tests.audio_utils import fixture, load_wav, manifest, normalize_text, room_noise, tones, wer

from .conftest import finals, make_hub, run_session, text_of

ENGLISH = [
    e for e in manifest()["files"] if e["language"] == "en" and e["kind"] in ("utterance", "long", "silences")
]


async def test_hub_wer_within_two_points_of_faster_whisper_direct(whisper: WhisperProvider) -> None:
    """Every English fixture, fed as PCM16 through a session (decode → resample → VAD →
    segment → whisper stage), against ``WhisperModel.transcribe`` on the same samples."""
    hub = make_hub({"whisper": whisper})
    model = load_model(WhisperSettings())
    errors = {"hub": 0.0, "direct": 0.0}
    words = 0
    for entry in ENGLISH:
        samples, rate = load_wav(fixture(entry["file"]))
        assert rate == 16_000
        events = await run_session(hub, samples, {"partials": False})
        segments, _ = model.transcribe(samples, language="en", beam_size=5)
        direct = " ".join(s.text for s in segments)
        n = len(normalize_text(entry["text"]).split())
        errors["hub"] += wer(entry["text"], text_of(events)) * n
        errors["direct"] += wer(entry["text"], direct) * n
        words += n
        assert all(f.provider == "whisper" and f.language == "en" for f in finals(events))
    hub_wer, direct_wer = errors["hub"] / words, errors["direct"] / words
    print(f"corpus WER over {len(ENGLISH)} files: hub {hub_wer:.4f}, faster-whisper direct {direct_wer:.4f}")
    assert hub_wer <= direct_wer + 0.02
    assert hub_wer < 0.05


async def test_streaming_long_fixture_partials_then_finals_matching_batch(whisper: WhisperProvider) -> None:
    samples, _ = load_wav(fixture("long_40s.wav"))
    assert len(samples) > 30 * 16_000
    hub = make_hub({"whisper": whisper})
    events = await run_session(hub, samples, {"partials": True}, speed=8.0)
    got = finals(events)
    assert len(got) >= 2  # the utterance is longer than max_utterance_s: force-split
    first_final = events.index(got[0])
    partials = [e for e in events if isinstance(e, PartialTranscript)]
    assert partials and events.index(partials[0]) < first_final
    for p in partials:  # a partial never follows the final of its own utterance
        final = next(f for f in got if f.segment_id == p.segment_id)
        assert events.index(p) < events.index(final) and p.text
    ids = [f.segment_id for f in got]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [w.start for f in got for w in f.words or ()]
    assert times == sorted(times) and 0.0 <= times[0] and times[-1] <= len(samples) / 16_000
    batch = await whisper.transcribe(samples, language="en")
    assert wer(batch.text, text_of(events)) <= 0.05


@pytest.mark.parametrize("vad", [True, False], ids=["vad_on", "vad_off"])
async def test_a_minute_of_non_speech_yields_no_text(whisper: WhisperProvider, vad: bool) -> None:
    """Digital silence, room tone and music-like tones: Whisper's inventions ("you", "Thank
    you.") are caught by its own no-speech / log-probability signals."""
    hub = make_hub({"whisper": whisper})
    signals = {
        "silence": np.zeros(60 * 16_000, np.float32),
        "room": room_noise(60.0, seed=11, level_db=-50),
        "tones": tones(60.0, seed=5),
    }
    for name, samples in signals.items():
        events = await run_session(hub, samples, {"vad": {"enabled": vad}, "partials": False}, chunk_s=0.5)
        texts = [f.text for f in finals(events)]
        assert all(t == "" for t in texts), (name, texts)
        if not vad:
            assert 6 <= len(texts) <= 9, name  # windows of 7-10 s: every one answered, with no text


async def test_file_longer_than_30_s_in_one_call(whisper: WhisperProvider) -> None:
    samples, _ = load_wav(fixture("long_40s.wav"))
    result = await whisper.transcribe(samples)
    entry = next(e for e in ENGLISH if e["file"] == "long_40s.wav")
    assert wer(entry["text"], result.text) <= 0.05
    assert result.words is not None and result.language == "en"
    starts = [w.start for w in result.words]
    assert starts == sorted(starts) and result.words[-1].end <= result.duration + 0.05
    assert len(result.segments) >= 2 and result.segments[-1].end > 30.0


async def test_language_of_an_english_only_model(whisper: WhisperProvider) -> None:
    samples, _ = load_wav(fixture("quick_fox.wav"))
    assert (await whisper.transcribe(samples, language="en-US")).language == "en"
    with pytest.raises(ProviderError, match="only transcribes en, not 'ko'"):
        await whisper.transcribe(samples, language="ko")


def rss_mib() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


async def test_an_idle_engine_gives_back_the_memory_its_calls_freed(whisper: WhisperProvider) -> None:
    """The decodes' freed working buffers stay in glibc's arenas (~60-100 MB) until the engine
    idles; then they go back to the system (docs/benchmarks.md, memory against the peer)."""
    clips = [load_wav(fixture(name))[0] for name in ("quick_fox.wav", "science.wav", "reminder.wav")]
    for clip in clips:
        await whisper.transcribe(clip, language="en")
        task = whisper.try_partial(clip[: len(clip) // 2], language="en")
        if task is not None:
            await task
    pool = whisper.engine().pool
    assert pool is not None and pool.trim is not None and pool.idle
    held = rss_mib()
    await asyncio.wait_for(pool.trim.done.wait(), 60)
    assert pool.trim.trims >= 1
    assert rss_mib() < held - 8, (held, rss_mib())


def test_check_explains_a_missing_model(tmp_path: Path) -> None:
    assert check({}) is None
    problem = check({"model": str(tmp_path / "nowhere")})
    assert problem is not None and "nowhere" in problem and "model.bin" in problem
    problem = check({"model": "large-v9"})
    assert problem is not None and "download = true" in problem
    assert check({"beam_size": "five"}) is not None


async def test_start_with_a_missing_model_is_unavailable(tmp_path: Path) -> None:
    provider = WhisperProvider({"model": str(tmp_path)})
    with pytest.raises(ProviderUnavailable, match="no CTranslate2 Whisper model"):
        await provider.start()


async def test_unknown_provider_is_refused_by_hub_open(whisper: WhisperProvider) -> None:
    hub = make_hub({"whisper": whisper})
    with pytest.raises(HubError) as caught:
        hub.open({"provider": "nonexistent"})
    assert caught.value.code == "unknown_provider" and "whisper" in caught.value.message
    with pytest.raises(HubError) as caught:
        hub.open({"provider": ["whisper", "nonexistent"]})
    assert caught.value.code == "unknown_provider"
