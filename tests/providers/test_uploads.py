"""Batch work is cut into short jobs (asrhub/engine/uploads.py), so live finals never wait behind a
whole file. Real faster-whisper; ``CountingWhisper`` is the real provider that also records the
length of every engine call it serves (an observer, nothing is faked)."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import numpy as np

from asrhub.engine.uploads import JOB_S, jobs
from asrhub.frames import Samples
from asrhub.plugin import Transcription
from asrhub.providers.whisper import WhisperProvider
from tests.audio_utils import fixture, fixture_entry, load_wav, wer

from .conftest import make_hub


class CountingWhisper(WhisperProvider):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[float] = []

    async def transcribe(self, samples: Samples, **kw: Any) -> Transcription:
        self.calls.append(len(samples) / 16_000)
        return await super().transcribe(samples, **kw)


def test_jobs_are_at_most_30_s_contiguous_and_cut_in_a_pause() -> None:
    one, _ = load_wav(fixture("weather_question.wav"))  # 3.4 s, quiet head and tail
    audio = np.concatenate([one] * 25)  # 85 s
    cuts = jobs(audio)
    assert cuts[0][0] == 0 and cuts[-1][1] == len(audio)
    assert all(b == c for (_, b), (c, _) in pairwise(cuts))
    assert all(0 < b - a <= JOB_S * 16_000 for a, b in cuts) and len(cuts) >= 3
    for _, b in cuts[:-1]:  # every cut falls where the clip is quiet, not in a word
        assert float(np.abs(audio[b - 160 : b + 160]).max()) < 0.05


async def test_an_upload_is_transcribed_in_jobs_of_at_most_30_s() -> None:
    whisper = CountingWhisper()
    await whisper.start()
    try:
        hub = make_hub({"whisper": whisper})
        samples, _ = load_wav(fixture("long_40s.wav"))
        done: list[float] = []
        name, result = await hub.transcribe(samples, progress=lambda d, t: done.append(d / t))
        assert name == "whisper" and len(whisper.calls) == 2 and max(whisper.calls) <= JOB_S
        assert done[-1] == 1.0 and len(done) == 2
        assert wer(fixture_entry("long_40s.wav")["text"], result.text) <= 0.05
        starts = [w.start for w in result.words or ()]
        assert starts == sorted(starts) and starts[-1] > JOB_S - 5  # file time, across the cut
    finally:
        await whisper.close()


async def test_a_full_engine_queue_pushes_back_instead_of_failing() -> None:
    """Six uploads at once on an engine that queues one clip: before, the third and later got
    ``provider_failed`` (PoolFull); now they wait for room and every one is transcribed."""
    whisper = WhisperProvider({"max_queue": 1})
    await whisper.start()
    try:
        hub = make_hub({"whisper": whisper})
        samples, _ = load_wav(fixture("quick_fox.wav"))
        results = await asyncio.gather(*(hub.transcribe(samples) for _ in range(6)), return_exceptions=True)
        assert [type(r).__name__ for r in results] == ["tuple"] * 6, results
        assert all("fox" in r[1].text.lower() for r in results if isinstance(r, tuple))
    finally:
        await whisper.close()
