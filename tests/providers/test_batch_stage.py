"""The generic batch stage, driven with Segment frames straight into it (real faster-whisper).

What it promises: one final-or-error per final Segment, in segment order; partials that never
outlive their final; backpressure through ``ctx.pending``; completion after the last final;
nothing after dispose; every other frame passes through untouched.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from reactivex.subject import Subject
from reactivex.testing import ReactiveTest, TestScheduler

from asrhub.config import Limits, SessionConfig
from asrhub.flow import Pending
from asrhub.frames import (
    ErrorEvent,
    FinalTranscript,
    Frame,
    PartialTranscript,
    Segment,
    SpeechEnded,
    SpeechStarted,
    WakeWordDetected,
)
from asrhub.plugin import Provider
from asrhub.providers.whisper import WhisperProvider
from asrhub.session.context import Context
from tests.audio_utils import fixture, fixture_entry, load_wav, room_noise, wer

from .conftest import FakeFailingProvider

on_next, on_completed = ReactiveTest.on_next, ReactiveTest.on_completed


class Harness:
    def __init__(self, primary: Provider, fallbacks: tuple[Provider, ...] = (), **limits: Any) -> None:
        self.ctx = Context("t", SessionConfig(), Limits(**limits), (primary, *fallbacks), Pending(3))
        self.input: Subject[Frame] = Subject()
        self.out: list[Frame] = []
        self.done, self.arrived = asyncio.Event(), asyncio.Event()
        self.errors: list[Exception] = []
        self.sub = self.input.pipe(primary.stage(self.ctx, fallbacks)).subscribe(
            self.on_next, self.errors.append, self.done.set
        )

    def on_next(self, frame: Frame) -> None:
        self.out.append(frame)
        self.arrived.set()

    async def wait_for(self, kind: type) -> None:
        while not self.of(kind):
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 60)

    def seg(
        self, seg_id: int, name: str, start: float, *, final: bool = True, cut: float | None = None
    ) -> Segment:
        x, _ = load_wav(fixture(name))
        if cut is not None:
            x = x[: int(cut * 16_000)]
        return Segment(seg_id, x, 16_000, start, start + len(x) / 16_000, final)

    async def finish(self) -> None:
        self.input.on_completed()
        await asyncio.wait_for(self.done.wait(), 60)

    def of(self, kind: type) -> list[Any]:
        return [f for f in self.out if isinstance(f, kind)]


async def test_finals_in_segment_order_with_stream_time_words(whisper: WhisperProvider) -> None:
    slow = FakeFailingProvider(whisper, name="slow_once", ok_calls=99, slow_first=1.0)
    h = Harness(slow)
    names = ["quick_fox.wav", "weather_question.wav", "reminder.wav"]
    h.input.on_next(SpeechStarted(0.0))
    for i, name in enumerate(names, start=1):
        h.input.on_next(h.seg(i, name, start=10.0 * i))
    assert h.ctx.pending.count == 3
    h.input.on_next(SpeechEnded(35.0))
    assert [type(f) for f in h.out] == [SpeechStarted, SpeechEnded]  # passed through at once
    await h.finish()
    got = h.of(FinalTranscript)
    assert [f.segment_id for f in got] == [1, 2, 3]  # the first was answered last
    for final, name in zip(got, names, strict=True):
        assert wer(fixture_entry(name)["text"], final.text) <= 0.1
        assert final.provider == "slow_once" and final.language == "en"
        starts = [w.start for w in final.words]
        assert (
            starts == sorted(starts) and final.start <= starts[0] and final.words[-1].end <= final.end + 0.05
        )
    assert h.ctx.pending.count == 0 and not h.errors


async def test_non_speech_final_is_emitted_empty(whisper: WhisperProvider) -> None:
    h = Harness(whisper)
    noise = room_noise(8.0, seed=4, level_db=-45)
    h.input.on_next(Segment(1, noise, 16_000, 0.0, 8.0, True))
    await h.finish()
    assert [(f.segment_id, f.text) for f in h.of(FinalTranscript)] == [(1, "")]


async def test_partial_then_final_and_stale_partial_dropped(whisper: WhisperProvider) -> None:
    h = Harness(whisper)
    h.input.on_next(h.seg(1, "science.wav", 0.0, final=False, cut=2.0))
    await h.wait_for(PartialTranscript)
    partial = h.of(PartialTranscript)[0]
    assert partial.segment_id == 1 and partial.end == 2.0 and "scientist" in partial.text.lower()
    # a snapshot immediately followed by its final: the partial decode that is under way
    # must not be emitted once the final segment has arrived
    h.input.on_next(h.seg(2, "quick_fox.wav", 10.0, final=False, cut=2.0))
    h.input.on_next(h.seg(2, "quick_fox.wav", 10.0))
    await h.finish()
    assert [f.segment_id for f in h.of(PartialTranscript)] == [1]
    assert [f.segment_id for f in h.of(FinalTranscript)] == [2]


async def test_partials_are_shed_while_a_final_runs_then_offered_again(whisper: WhisperProvider) -> None:
    a, b = Harness(whisper), Harness(whisper)
    pool = whisper.engine().pool
    assert pool is not None
    shed = pool.stats.shed
    a.input.on_next(a.seg(1, "address_time.wav", 0.0))
    a.input.on_next(a.seg(2, "reminder.wav", 6.0, final=False, cut=2.0))  # behind its own final
    await asyncio.sleep(0.05)  # the final holds the only worker now
    b.input.on_next(b.seg(1, "reminder.wav", 0.0, final=False, cut=2.0))  # another session's
    assert pool.stats.shed == shed + 1
    await a.finish()
    # b sends nothing more: its refused snapshot is offered again once the engine is free (a
    # client that pauses its audio mid-utterance still gets a partial of all it sent)
    await b.wait_for(PartialTranscript)
    await b.finish()
    assert a.of(PartialTranscript) == []  # a's own was behind its final, and a ended
    assert [p.segment_id for p in b.of(PartialTranscript)] == [1]
    assert [f.segment_id for f in a.of(FinalTranscript)] == [1]


@pytest.mark.parametrize("mode", ["error", "crash"])
async def test_all_providers_fail_one_error_per_segment(whisper: WhisperProvider, mode: str) -> None:
    dead = FakeFailingProvider(whisper, name="dead", mode=mode)
    h = Harness(dead)
    h.input.on_next(h.seg(1, "quick_fox.wav", 0.0))
    h.input.on_next(h.seg(2, "science.wav", 5.0))
    await h.finish()
    errors = h.of(ErrorEvent)
    assert [(e.code, e.fatal, e.segment_id) for e in errors] == [
        ("provider_failed", False, 1),
        ("provider_failed", False, 2),
    ]
    expected = "lost its engine" if mode == "error" else "engine segfault simulated"
    assert all(expected in e.message and e.message.startswith("dead: ") for e in errors)
    assert h.ctx.pending.count == 0


async def test_timeout_fails_over_on_the_same_audio(whisper: WhisperProvider) -> None:
    hung = FakeFailingProvider(whisper, name="hung", mode="hang")
    h = Harness(hung, (whisper,), provider_timeout_s=8.0)  # long enough for a loaded machine
    h.input.on_next(h.seg(1, "weather_question.wav", 0.0))
    h.input.on_next(h.seg(2, "quick_fox.wav", 5.0))
    await h.finish()
    got = h.of(FinalTranscript)
    assert [(f.segment_id, f.provider) for f in got] == [(1, "whisper"), (2, "whisper")]
    assert wer(fixture_entry("weather_question.wav")["text"], got[0].text) <= 0.1
    assert hung.calls <= 2  # after its first timeout it is tried last, not first


async def test_dispose_cancels_and_emits_nothing_more(whisper: WhisperProvider) -> None:
    """The decode runs to its end (shielded from the stage's cancel) and its result exists;
    only then is the output checked, so a stage that kept listening after dispose would have
    emitted it by then. (A fixed sleep passed while the decode was still running.)"""
    real = whisper.transcribe
    decoded = asyncio.Event()
    started = asyncio.Event()

    async def spy(*args: Any, **kw: Any) -> Any:
        started.set()
        result = await real(*args, **kw)
        decoded.set()
        return result

    def shielded(*args: Any, **kw: Any) -> Any:
        return asyncio.shield(spy(*args, **kw))

    whisper.transcribe = shielded  # type: ignore[method-assign]
    h = Harness(whisper)
    h.input.on_next(h.seg(1, "long_40s.wav", 0.0, cut=20.0))
    await asyncio.wait_for(started.wait(), 60)
    h.sub.dispose()
    await asyncio.wait_for(decoded.wait(), 120)
    for _ in range(20):  # let any callback the finished decode scheduled run
        await asyncio.sleep(0)
    assert h.out == [] and not h.done.is_set()


async def test_marbles_every_other_frame_passes_through_in_order(whisper: WhisperProvider) -> None:
    """--S--W--E--|  →  --S--W--E--|  (no segment: nothing to wait for, completion at once)"""
    scheduler = TestScheduler()
    s, w, e = SpeechStarted(0.1), WakeWordDetected("hey_jarvis", 0.9, 0.2), SpeechEnded(0.3)
    source = scheduler.create_hot_observable(
        on_next(210, s), on_next(220, w), on_next(230, e), on_completed(240)
    )
    ctx = Context("m", SessionConfig(), Limits(), (whisper,), Pending(3))
    results = scheduler.start(lambda: source.pipe(whisper.stage(ctx)))
    assert results.messages == [on_next(210, s), on_next(220, w), on_next(230, e), on_completed(240)]
