"""Metrics: every name is exported, and the values move under a real stream through a real hub
(its own registry: the two-hub isolation is in test_metrics_per_hub.py)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import reactivex
from prometheus_client.parser import text_string_to_metric_families
from reactivex import operators as ops
from reactivex.testing import ReactiveTest, TestScheduler

from asrhub.engine.engine_subject import EngineSubject
from asrhub.engine.inference_pool import InferencePool
from asrhub.errors import HubError
from asrhub.frames import AudioChunk, RawAudio, SpeechEnded, SpeechStarted
from asrhub.hub import Hub
from asrhub.metrics import hub as metrics
from asrhub.metrics.hub import HubMetrics
from tests.ops.conftest import pcm_chunks

NAMES = [
    "asrhub_sessions_active",
    "asrhub_sessions_opened",
    "asrhub_sessions_closed",
    "asrhub_audio_frames_in",
    "asrhub_audio_bytes_in",
    "asrhub_events_out",
    "asrhub_errors",
    "asrhub_drops",
    "asrhub_operator_seconds",
    "asrhub_provider_latency_seconds",
    "asrhub_inference_seconds",
    "asrhub_inference_abandoned",
    "asrhub_inference_queue_depth",
    "asrhub_inference_busy",
    "asrhub_subscriptions",
    "asrhub_event_loop_tasks",
    "asrhub_decoder_threads",
    "asrhub_uploads",
]


def scrape(source: Hub | HubMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse what the hub's /metrics would serve into {(sample name, labels): value}."""
    body, content_type = (source.metrics if isinstance(source, Hub) else source).render()
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_every_metric_family_is_exported() -> None:
    hub_metrics = HubMetrics()
    body, _ = hub_metrics.render()
    families = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    for name in NAMES:
        assert name in families, name
    assert families["asrhub_events_out"] == "counter"
    assert families["asrhub_operator_seconds"] == "histogram"
    assert families["asrhub_sessions_active"] == "gauge"
    assert "process_cpu_seconds" in families
    openmetrics, content_type = hub_metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert openmetrics.endswith(b"# EOF\n")
    assert list(hub_metrics.names())  # the registry is private: the global one holds none of ours
    from prometheus_client import REGISTRY as GLOBAL

    assert not [m.name for m in GLOBAL.collect() if m.name.startswith("asrhub_")]


async def test_metrics_move_under_a_real_stream(vad_hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vad_hub.metrics, "operator_sample", 1)  # time this session's stages
    transport = "test-stream"
    chunks = pcm_chunks("silences.wav")  # four utterances separated by silence
    before = scrape(vad_hub)
    session = vad_hub.open({"provider": "none"}, transport=transport)
    events = []

    async def read() -> None:
        async for event in session.iter_events():
            events.append(event)

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    during = scrape(vad_hub)
    assert sample(during, "asrhub_sessions_active", transport=transport) == 1
    assert sample(during, "asrhub_subscriptions") >= 1
    assert sample(during, "asrhub_event_loop_tasks") >= 1
    for chunk in chunks:
        await session.feed(chunk)
    with pytest.raises(HubError):
        await session.feed(b"\0" * (vad_hub.limits.max_frame_bytes + 2))
    assert await session.end() == "end"
    await reader
    with pytest.raises(HubError) as refused:
        vad_hub.open({"provider": "no-such-engine"}, transport=transport)
    assert refused.value.code == "unknown_provider"
    after = scrape(vad_hub)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    starts = sum(isinstance(e, SpeechStarted) for e in events)
    ends = sum(isinstance(e, SpeechEnded) for e in events)
    assert starts >= 3 and ends == starts
    assert moved("asrhub_audio_frames_in_total", transport=transport) == len(chunks)
    assert moved("asrhub_audio_bytes_in_total", transport=transport) == sum(map(len, chunks))
    assert moved("asrhub_events_out_total", type="vad.speech_started") == starts
    assert moved("asrhub_events_out_total", type="vad.speech_ended") == ends
    assert moved("asrhub_events_out_total", type="session.closed") >= 1
    assert moved("asrhub_sessions_opened_total", transport=transport) == 1
    assert moved("asrhub_sessions_closed_total", transport=transport, reason="end") == 1
    assert sample(after, "asrhub_sessions_active", transport=transport) == 0
    assert moved("asrhub_drops_total", reason="too_large") == 1
    assert moved("asrhub_errors_total", code="too_large") == 1
    assert moved("asrhub_errors_total", code="unknown_provider") == 1
    assert moved("asrhub_operator_seconds_count", operator="decode") == len(chunks)
    for stage in ("decode", "resample", "vad_gate"):
        assert moved("asrhub_operator_seconds_count", operator=stage) >= len(chunks) - 2, stage
        assert moved("asrhub_operator_seconds_sum", operator=stage) > 0, stage


async def test_slow_reader_drops_are_counted(vad_hub: Hub) -> None:
    session = vad_hub.open({"provider": "none"}, transport="test-slow")
    before = scrape(vad_hub)
    queue = session.queue(4)  # never read: VAD events pile up past the bound
    for chunk in pcm_chunks("silences.wav"):
        await session.feed(chunk)
    session.close()
    after = scrape(vad_hub)
    assert queue.overflowed
    assert (
        sample(after, "asrhub_drops_total", reason="slow_consumer")
        - sample(before, "asrhub_drops_total", reason="slow_consumer")
        == 1
    )
    assert (
        sample(after, "asrhub_errors_total", code="slow_consumer")
        - sample(before, "asrhub_errors_total", code="slow_consumer")
        == 1
    )
    queue.close()


async def test_inference_pool_gauges_and_shedding() -> None:
    pool = InferencePool("test-pool", workers=1)
    engine_started, engine_done = asyncio.Event(), asyncio.Event()

    async def engine(payloads: list[int], partial: bool) -> list[int]:
        engine_started.set()
        await engine_done.wait()  # a final holds the engine until the test lets it go
        return payloads

    subject: EngineSubject[int, int] = EngineSubject("test-subject", engine)
    hub_metrics = HubMetrics()
    hub_metrics.track_pool(pool)  # no provider exposes them: tracked by hand
    hub_metrics.track_pool(subject)
    try:

        def blocking() -> int:
            time.sleep(0.05)
            return 1

        first = asyncio.ensure_future(pool.run(lambda: (time.sleep(0.3), 1)[1]))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(pool.run(blocking))
        await asyncio.sleep(0.01)
        busy = scrape(hub_metrics)
        assert sample(busy, "asrhub_inference_busy", pool="test-pool") == 1
        assert sample(busy, "asrhub_inference_queue_depth", pool="test-pool") == 1
        shed_before = sample(busy, "asrhub_drops_total", reason="partial_shed")
        final = asyncio.ensure_future(subject.submit(1))
        await engine_started.wait()
        assert subject.try_submit(2) is None  # a partial while a final runs is shed
        engine_done.set()
        assert await final == 1
        assert await first == 1 and await queued == 1
        done = scrape(hub_metrics)
        assert sample(done, "asrhub_drops_total", reason="partial_shed") == shed_before + 1
        assert sample(done, "asrhub_inference_seconds_count", pool="test-pool") == 2
        assert sample(done, "asrhub_inference_seconds_sum", pool="test-pool") >= 0.3
        assert sample(done, "asrhub_inference_queue_depth", pool="test-pool") == 0
        with pytest.raises(TimeoutError):
            await pool.run(lambda: (time.sleep(0.3), 1)[1], timeout=0.05)
        assert sample(scrape(hub_metrics), "asrhub_inference_abandoned_total", pool="test-pool") == 1
    finally:
        pool.shutdown()
        subject.shutdown()


def test_instrumented_chain_passes_frames_through_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Marble test: the timing probes are invisible in the stream.

    source:   --a--b--c--d--e--f--g--h--i--|
    stages:   map(x → x), filter(all but c), map(x → x)
    expected: --a--b-----d--e--f--g--h--i--|   same as reactivex.compose of the bare stages
    """
    hub_metrics = HubMetrics(operator_sample=1)
    scheduler = TestScheduler()
    frames = [AudioChunk(np.zeros(160, np.float32), 16_000, i * 0.01, i) for i in range(9)]
    messages = [ReactiveTest.on_next(210 + 10 * i, f) for i, f in enumerate(frames)]
    messages.append(ReactiveTest.on_completed(400))
    stages = [
        ("marble_map", ops.map(lambda f: f)),
        ("marble_filter", ops.filter(lambda f: f.seq != 2)),
        ("marble_map2", ops.map(lambda f: f)),
    ]
    results = scheduler.start(
        lambda: scheduler.create_hot_observable(*messages).pipe(hub_metrics.instrument(stages))
    )
    expected = [ReactiveTest.on_next(210 + 10 * i, f) for i, f in enumerate(frames) if i != 2]
    expected.append(ReactiveTest.on_completed(400))
    assert results.messages == expected
    assert sum(hub_metrics.operators["marble_filter"].counts) == 9  # the filter saw all nine


def test_one_session_in_n_is_timed() -> None:
    from reactivex.subject import Subject

    hub_metrics = HubMetrics(operator_sample=3)
    subjects: list[Subject[int]] = []
    for _ in range(6):
        subject: Subject[int] = Subject()
        subject.pipe(hub_metrics.instrument([("one_in_three", ops.map(lambda x: x))])).subscribe(
            lambda _x: None
        )
        subjects.append(subject)
    for subject in subjects:
        for i in range(10):
            subject.on_next(i)
    assert sum(hub_metrics.operators["one_in_three"].counts) == 2 * 10  # two pipelines of six, all frames


def test_each_stage_is_charged_its_own_time_only() -> None:
    """cheap → slow (5 ms a frame) → cheap → slow consumer: only the slow stage is charged."""
    from reactivex.subject import Subject

    # A clock that moves only when a stage "works": the check is exact, whatever the load.
    clock = [100.0]

    def work(seconds: float) -> None:
        clock[0] += seconds

    def slow(frame: RawAudio) -> RawAudio:
        work(0.005)
        return frame

    hub_metrics = HubMetrics(operator_sample=1)
    real_clock, metrics.perf_counter = metrics.perf_counter, lambda: clock[0]
    try:
        names = ("own_cheap_1", "own_slow", "own_cheap_2")
        subject: Subject[RawAudio] = Subject()
        chain = hub_metrics.instrument(
            [(names[0], ops.map(lambda f: f)), (names[1], ops.map(slow)), (names[2], ops.map(lambda f: f))]
        )
        received: list[RawAudio] = []
        subject.pipe(chain).subscribe(lambda f: (received.append(f), work(0.005)))
        for _ in range(6):
            subject.on_next(RawAudio(b"x"))
        assert len(received) == 6
        hists = [hub_metrics.operators[n] for n in names]  # this hub's: they start at 0
        assert all(sum(h.counts) == 6 for h in hists)
        spent = [h.total / 6 for h in hists]
        assert spent[1] == pytest.approx(0.005)
        assert spent[0] == 0 and spent[2] == 0  # not charged the slow stage or consumer (5 ms each)
    finally:
        metrics.perf_counter = real_clock


def test_sampling_off_is_plain_compose() -> None:
    hub_metrics = HubMetrics(operator_sample=0)
    out: list[int] = []
    reactivex.of(1, 2, 3).pipe(hub_metrics.instrument([("never_timed", ops.map(lambda x: x * 2))])).subscribe(
        out.append
    )
    assert out == [2, 4, 6] and "never_timed" not in hub_metrics.operators
