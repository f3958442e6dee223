"""The provider subject of the in-process whisper engine: cross-session batching, priorities,
lanes, and one failing clip — on the real tiny.en model.

Waiting is on events: the engine's final lane is held by a blocking call (``run_on_lane``) until the
clips under test have queued, so what ends up in one batch does not depend on timing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from reactivex.subject import Subject

from asrhub.config import Limits, SessionConfig
from asrhub.engine.engine_subject import EngineSubject
from asrhub.flow import Pending
from asrhub.frames import FinalTranscript, Frame, Segment
from asrhub.plugin import PoolFull, Priority, ProviderError, Transcription
from asrhub.providers.whisper import WhisperProvider
from asrhub.providers.whisper_model import Clip, decode_clips
from asrhub.session.context import Context
from tests.audio_utils import fixture, fixture_entry, load_wav, wer
from tests.engine_calls import run_on_lane

from .conftest import finals, make_hub, run_session

FILES = ["quick_fox.wav", "weather_question.wav", "reminder.wav", "science.wav", "address_time.wav"]
SILENCE = np.zeros(16_000, np.float32)


def speech(name: str) -> np.ndarray:
    samples, rate = load_wav(fixture(name))
    assert rate == 16_000
    return samples


@pytest.fixture
async def batched() -> AsyncIterator[WhisperProvider]:
    provider = WhisperProvider({"batch_max": 8, "batch_window_ms": 20})
    await provider.start()
    yield provider
    await provider.close()


async def hold_final_lane(pool: EngineSubject[Any, Any]) -> tuple[asyncio.Future[Any], threading.Event]:
    """Occupy the (single) final lane with a blocking call until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def block() -> None:
        started.set()
        assert release.wait(120), "the test never released the engine"

    blocker = asyncio.ensure_future(run_on_lane(pool, block))
    assert await asyncio.to_thread(started.wait, 60)
    return blocker, release


async def until(condition: Any, what: str) -> None:
    for _ in range(6000):  # re-checked on each loop turn; fails after ~60 s
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_sessions_ending_together_share_engine_calls_and_get_their_own_text(
    batched: WhisperProvider,
) -> None:
    pool = batched.engine().pool
    assert pool is not None
    hub = make_hub({"whisper": batched})
    k = 4
    plan = [(FILES[i], FILES[(i + 1) % len(FILES)]) for i in range(k)]  # two utterances each
    audio = [np.concatenate([SILENCE, speech(a), SILENCE, speech(b), SILENCE]) for a, b in plan]
    blocker, release = await hold_final_lane(pool)
    calls_before = pool.calls
    sessions = [
        asyncio.create_task(run_session(hub, x, {"partials": False, "language": "en"})) for x in audio
    ]
    # every session's first final is now waiting for the engine (a session's finals go one by one)
    await until(lambda: pool.queued >= k, f"{k} finals queued")
    release.set()
    await blocker
    results = await asyncio.gather(*sessions)
    engine_calls = pool.calls - calls_before
    total_finals = sum(len(finals(events)) for events in results)
    assert total_finals == 2 * k
    assert engine_calls < total_finals, (engine_calls, total_finals)
    assert engine_calls <= 1 + k  # the k first utterances went in one call
    for (first, second), events in zip(plan, results, strict=True):
        got = finals(events)
        assert [f.segment_id for f in got] == [1, 2]  # in order
        assert wer(fixture_entry(first)["text"], got[0].text) < 0.3, (first, got[0].text)
        assert wer(fixture_entry(second)["text"], got[1].text) < 0.3, (second, got[1].text)
        assert got[0].words and all(
            got[0].start <= w.start <= w.end <= got[0].end + 0.05 for w in got[0].words
        )


async def test_batched_decode_equals_one_by_one(batched: WhisperProvider) -> None:
    """The same clips give the same text alone and in one batch, and word times within 0.25 s
    (faster-whisper's word alignment carries the previous clip's last word into the next one's
    first-word heuristics)."""
    assert batched.engine().decoder is not None
    clips = [Clip(speech(name), "en", None) for name in FILES[:3]]
    together = decode_clips(batched.engine().decoder, clips, True)
    alone = [decode_clips(batched.engine().decoder, [c], True)[0] for c in clips]
    for a, b in zip(together, alone, strict=True):
        assert a.text == b.text
        assert a.words is not None and b.words is not None and len(a.words) == len(b.words)
        assert all(
            abs(x.start - y.start) < 0.25 and abs(x.end - y.end) < 0.25
            for x, y in zip(a.words, b.words, strict=True)
        )


async def test_finals_go_before_uploads_and_batch_by_priority(batched: WhisperProvider) -> None:
    pool = batched.engine().pool
    assert pool is not None
    order: list[tuple[str, ...]] = []
    real = pool.run_batch

    async def recording(clips: list[Clip], partial: bool) -> Any:
        order.append(tuple(c.prompt or "" for c in clips))
        return await real(clips, partial)

    pool.run_batch = recording
    blocker, release = await hold_final_lane(pool)
    upload = asyncio.create_task(batched.transcribe(speech(FILES[0]), priority=Priority.UPLOAD))
    await until(lambda: pool.queued == 1, "the upload queued")
    final = asyncio.create_task(batched.transcribe(speech(FILES[1]), priority=Priority.FINAL))
    await until(lambda: pool.queued == 2, "the final queued")
    release.set()
    await blocker
    up, fin = await upload, await final
    assert len(order) == 2  # different priorities never share a call; the final went first
    assert (
        wer(fixture_entry(FILES[1])["text"], fin.text) < 0.3
        and wer(fixture_entry(FILES[0])["text"], up.text) < 0.3
    )
    pool.run_batch = real


async def test_a_final_never_waits_behind_a_partial(batched: WhisperProvider) -> None:
    """The partial lane is held until the final has come back: only separate lanes get there."""
    pool = batched.engine().pool
    assert pool is not None
    real = pool.run_batch
    partial_started, final_done = threading.Event(), threading.Event()

    async def partial_waits_for_the_final(clips: list[Clip], partial: bool) -> Any:
        if partial:
            partial_started.set()
            assert await asyncio.to_thread(final_done.wait, 60), "the final waited behind the partial"
        return await real(clips, partial)

    pool.run_batch = partial_waits_for_the_final
    task = batched.try_partial(speech(FILES[2])[: 2 * 16_000], language="en")
    assert task is not None
    assert await asyncio.to_thread(partial_started.wait, 60)
    # a second partial while the partial lane is busy is shed, a final is not
    assert batched.try_partial(speech(FILES[3]), language="en") is None
    result = await batched.transcribe(speech(FILES[0]), language="en")
    final_done.set()
    assert wer(fixture_entry(FILES[0])["text"], result.text) < 0.3
    assert (await task).text
    pool.run_batch = real


class FakeFaultyEngine:
    """Fault injection around the real decoder: a batch holding a clip with NaN samples raises,
    as CTranslate2 would on a broken input, failing the whole engine call."""

    def __init__(self, provider: WhisperProvider) -> None:
        assert provider.engine().pool is not None
        self.real = provider.engine().pool.run_batch
        self.calls: list[int] = []

    async def __call__(self, clips: list[Clip], partial: bool) -> Any:
        self.calls.append(len(clips))
        if any(np.isnan(c.samples).any() for c in clips):
            raise ProviderError("FakeFaultyEngine: the engine rejected a clip")
        return await self.real(clips, partial)


async def test_one_failing_clip_fails_only_its_own_caller(batched: WhisperProvider) -> None:
    pool = batched.engine().pool
    assert pool is not None
    fake = FakeFaultyEngine(batched)
    pool.run_batch = fake
    blocker, release = await hold_final_lane(pool)
    broken = speech(FILES[1]).copy()
    broken[100] = np.nan
    names = [FILES[0], None, FILES[2]]
    tasks = [
        asyncio.create_task(batched.transcribe(speech(n) if n else broken, language="en")) for n in names
    ]
    await until(lambda: pool.queued == 3, "three finals queued")
    release.set()
    await blocker
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert fake.calls[0] == 3  # one call for all three, which failed; then each alone
    assert isinstance(results[1], ProviderError)
    for name, result in zip(names, results, strict=True):
        if name is not None:
            assert isinstance(result, Transcription)
            assert wer(fixture_entry(name)["text"], result.text) < 0.3
    pool.run_batch = fake.real


async def test_a_session_that_leaves_frees_its_place_in_the_batch(batched: WhisperProvider) -> None:
    pool = batched.engine().pool
    assert pool is not None
    blocker, release = await hold_final_lane(pool)
    stays = asyncio.create_task(batched.transcribe(speech(FILES[0]), language="en"))
    leaves = asyncio.create_task(batched.transcribe(speech(FILES[1]), language="en"))
    await until(lambda: pool.queued == 2, "two finals queued")
    leaves.cancel()
    await until(lambda: pool.queued == 1, "the cancelled one left the queue")
    clips_before = pool.clips
    release.set()
    await blocker
    assert wer(fixture_entry(FILES[0])["text"], (await stays).text) < 0.3
    assert pool.clips - clips_before == 1
    with pytest.raises(asyncio.CancelledError):
        await leaves


class FakeCallLog:
    """Records each engine call (partial or not) around the real decoder; a partial call can be
    held until the test releases it (the one fault it injects: a slow partial decode)."""

    def __init__(self, provider: WhisperProvider, *, hold_partials: bool = False) -> None:
        pool = provider.engine().pool
        assert pool is not None
        self.pool, self.real = pool, pool.run_batch
        self.calls: list[bool] = []
        self.partial_running, self.release = threading.Event(), threading.Event()
        if not hold_partials:
            self.release.set()
        pool.run_batch = self

    async def __call__(self, clips: list[Clip], partial: bool) -> Any:
        self.calls.append(partial)
        if partial:
            self.partial_running.set()
            assert await asyncio.to_thread(self.release.wait, 60), "the test never released the partial"
        return await self.real(clips, partial)

    def restore(self) -> None:
        self.release.set()
        self.pool.run_batch = self.real


async def test_a_partial_waiting_when_its_final_comes_never_runs(batched: WhisperProvider) -> None:
    """issue 25: a snapshot and, within the batching window, its utterance's final (session.end
    right after a partial was made). The partial's result could only be dropped; decoding it
    beside the final would share the cores with it. So the engine decodes the final alone."""
    log = FakeCallLog(batched)
    ctx = Context("t", SessionConfig(), Limits(), (batched,), Pending(3))
    source: Subject[Frame] = Subject()
    out: list[Frame] = []
    done = asyncio.Event()
    source.pipe(batched.stage(ctx)).subscribe(out.append, None, done.set)
    x = speech(FILES[0])
    source.on_next(Segment(1, x[: 2 * 16_000], 16_000, 0.0, 2.0, final=False))
    source.on_next(Segment(1, x, 16_000, 0.0, len(x) / 16_000))
    source.on_completed()
    await asyncio.wait_for(done.wait(), 60)
    log.restore()
    finals = [f for f in out if isinstance(f, FinalTranscript)]
    assert len(finals) == 1 and wer(fixture_entry(FILES[0])["text"], finals[0].text) < 0.3
    assert log.calls == [False], "a partial was decoded beside its own final"


async def test_waiting_partials_are_shed_when_a_final_comes(batched: WhisperProvider) -> None:
    """Another session's partial still in its batching window when a final arrives is shed."""
    pool = batched.engine().pool
    assert pool is not None
    log, shed = FakeCallLog(batched), pool.stats.shed
    partial = batched.try_partial(speech(FILES[2])[: 2 * 16_000], language="en")
    assert partial is not None
    final = await batched.transcribe(speech(FILES[0]), language="en")
    with pytest.raises(PoolFull):
        await partial
    log.restore()
    assert wer(fixture_entry(FILES[0])["text"], final.text) < 0.3
    assert log.calls == [False] and pool.stats.shed == shed + 1


async def test_a_cancelled_running_partial_keeps_its_lane_until_it_ends(batched: WhisperProvider) -> None:
    """A running partial decode cannot be stopped: when its caller leaves (its final came, the
    session closed) the lane stays taken, so the next partial does not run beside it."""
    pool = batched.engine().pool
    assert pool is not None
    log = FakeCallLog(batched, hold_partials=True)
    first = batched.try_partial(speech(FILES[2])[: 2 * 16_000], language="en")
    assert first is not None
    assert await asyncio.to_thread(log.partial_running.wait, 60)
    first.cancel()
    await until(lambda: first.done(), "the caller left")
    assert pool.busy == 1 and batched.try_partial(speech(FILES[3]), language="en") is None
    log.release.set()
    await until(lambda: pool.idle, "the partial's engine call ended")
    again = batched.try_partial(speech(FILES[3])[: 2 * 16_000], language="en")
    assert again is not None and (await again).text
    log.restore()
    assert log.calls == [True, True] and pool.stats.abandoned == 0
