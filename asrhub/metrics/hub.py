"""Prometheus metrics of one hub, kept cheap enough for the per-chunk hot path.

Each hub owns a :class:`HubMetrics` (made by the hub, or passed in): its
counters, histograms, stage-timing sample and its own ``CollectorRegistry``. Nothing is kept
in module globals, so two hubs in one process (an application embedding the hub, a test) never
mix: one hub's ``/metrics`` shows its own sessions only, and a hub that closes takes nothing of
the other's with it. Sessions, event delivery and provider stages reach their hub's metrics
through ``SessionContext.metrics``; the composition root (:mod:`asrhub.wiring`) builds each
session's chain with ``ctx.metrics.instrument`` / ``ctx.metrics.provider_latency``.

Nothing here calls ``prometheus_client`` per audio chunk. The hot path bumps plain ``int``
attributes (``StreamCounters``) or a :class:`FastHistogram`'s bucket list; a custom collector
turns them into metric families when ``/metrics`` is scraped, and reads the gauges (active
sessions, subscriptions, inference queue depth, asyncio tasks) from the live objects at that
moment. Everything is written on the event loop thread, like the rest of the hub; a scrape from
another thread reads ints, which the GIL keeps whole.

Hooks (methods of :class:`HubMetrics`; each a dict or attribute increment)::

    stream(transport) -> StreamCounters      Session: .frames_in / .bytes_in per feed
    event_out(event)                         Session: every event it emits (errors by code too)
    session_opened(transport) / session_closed(transport, reason)      Hub
    key_used(key_id, audio_s, sessions, requests)   the usage meter (asrhub.usage): per key id,
                                             at most once a second per session, never per chunk
    error(code)                              an error not emitted by a session (a refused open…)
    drop(reason)                             data dropped on purpose: partial_dropped,
                                             slow_consumer, too_large
    read_from(reading) / track_pool(pool)    gauges read at scrape time: the hub hands its
                                             callback (held weakly); a pool no provider exposes
    instrument(stages) / provider_latency(op)   compose / wrap pipeline stages (composition root)

The metrics never import the hub: the hub hands :meth:`HubMetrics.read_from` a callback that
returns a :class:`HubReading` (its sessions by transport, subscribers, resumable sessions, the
pools of its providers) when a scrape asks.

What is not the hub's own:

* **Inference pools** (:class:`~asrhub.engine.inference_pool.InferencePool`,
  :class:`~asrhub.engine.engine_subject.EngineSubject`) belong to their provider, and a provider
  object may serve several hubs. A pool counts into its own :class:`PoolStats` (worker time,
  abandoned calls, shed partials, refusals when full); a hub reports every pool its providers
  expose (a provider that is :class:`Pooled`) plus any passed to :meth:`HubMetrics.track_pool`.
  A pool shared by two hubs is thus reported by both, whole (its queue and its engine time are
  one engine's, whoever asked). A hub keeps the ``PoolStats`` of a pool it has seen after the
  pool is gone (a provider restarted), so its counters never go back.
* **Process collectors**: every hub's registry has a ``ProcessCollector`` (CPU, memory, file
  descriptors of the process: one process, whichever hub reports it), and
  ``asrhub_event_loop_tasks`` counts the tasks of the loop the scrape runs on.

Transports serve it with ``body, content_type = hub.metrics.render(accept)``.
"""

from __future__ import annotations

import asyncio
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Protocol, runtime_checkable

import reactivex
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from reactivex import Observable
from reactivex.abc import DisposableBase, ObserverBase, SchedulerBase

from asrhub.frames import ErrorEvent, Event, FinalTranscript, Frame, Segment, SpeechEnded
from asrhub.plugin import Operator
from asrhub.settings.schema import MetricsSettings

Scheduler = SchedulerBase | None

OPERATOR_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1)
"""Seconds of event-loop time one stage spends on one frame (its own share, not downstream's)."""
PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""Seconds from the end of an utterance reaching the provider stage to its final leaving it."""
OPERATOR_SAMPLE = 8
"""Default of ``[metrics] operator_sample``: stage timing in one session in this many."""


class FastHistogram:
    """A histogram that is a list of ints: ``observe`` costs one bisect and two additions."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out

    def add(self, other: FastHistogram) -> None:
        """Fold ``other`` (same bounds) into this one (several pools of one name)."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total


class StreamCounters:
    """Audio received on one transport; a session bumps these in ``feed``."""

    __slots__ = ("bytes_in", "frames_in")

    def __init__(self) -> None:
        self.frames_in = 0
        self.bytes_in = 0


class PoolStats:
    """The counters of one inference pool, kept by the pool (it knows no hub): worker time per
    call, calls abandoned after a timeout, partials shed, calls refused because it was full."""

    __slots__ = ("abandoned", "full", "shed", "timing")

    def __init__(self) -> None:
        self.timing = FastHistogram(PROVIDER_BUCKETS)
        self.abandoned = 0
        self.shed = 0
        self.full = 0


class Pool(Protocol):
    """What a hub reads of an inference pool (``InferencePool``, ``EngineSubject``)."""

    name: str
    stats: PoolStats

    @property
    def busy(self) -> int: ...

    @property
    def queued(self) -> int: ...


@runtime_checkable
class Pooled(Protocol):
    """A provider whose engine runs in pools of this process (the hub's metrics report them)."""

    def pools(self) -> Sequence[Pool]:
        """The pools it uses right now (none before it started)."""


@dataclass(slots=True)
class HubReading:
    """What a scrape reads of one hub at that moment (the hub's callback builds it)."""

    sessions: dict[str, int] = field(default_factory=dict)
    """Open sessions by transport."""
    subscriptions: int = 0
    """Subscribers attached to those sessions' events."""
    resumable: int = 0
    """Sessions holding a resume token, attached or not."""
    detached: int = 0
    """Of those, the ones waiting for their client to resume them."""
    pools: list[Pool] = field(default_factory=list)
    """The pools its providers use right now."""
    decoders_running: int = 0
    """Compressed-audio decoder threads at work."""
    decoders_waiting: int = 0
    """Sessions waiting for a decoder thread."""
    uploads_running: int = 0
    """Uploads being decoded or transcribed."""
    uploads_waiting: int = 0
    """Uploads waiting for their turn."""


Reading = Callable[[], HubReading]


def _histogram(table: dict[str, FastHistogram], name: str, bounds: Sequence[float]) -> FastHistogram:
    hist = table.get(name)
    if hist is None:
        hist = table[name] = FastHistogram(bounds)
    return hist


# ---------------------------------------------------------------------------------- stage timing

Forward = Callable[[Frame], None]


class _Tap(Observable[Frame]):
    """A pass-through Observable whose ``on_next`` is ``make(downstream_on_next)``.

    Lighter than ``reactivex.create``: it adds one plain function call per frame and no
    observer wrapper (the source's own subscription still guards completion and disposal).
    """

    def __init__(self, source: Observable[Frame], make: Callable[[Forward], Forward]) -> None:
        self._tap_source = source
        self._tap_make = make
        super().__init__(self._tap_subscribe)

    def _tap_subscribe(self, observer: ObserverBase[Frame], scheduler: Scheduler = None) -> DisposableBase:
        return self.subscribe(observer, scheduler=scheduler)

    def subscribe(  # type: ignore[override]
        self,
        on_next: ObserverBase[Frame] | Forward | None = None,
        on_error: Callable[[Exception], None] | None = None,
        on_completed: Callable[[], None] | None = None,
        *,
        scheduler: Scheduler = None,
    ) -> DisposableBase:
        if hasattr(on_next, "on_next"):
            observer: ObserverBase[Frame] = on_next  # type: ignore[assignment]
            on_next, on_error, on_completed = observer.on_next, observer.on_error, observer.on_completed
        forward: Forward = on_next if on_next is not None else (lambda _frame: None)
        return self._tap_source.subscribe(
            self._tap_make(forward), on_error, on_completed, scheduler=scheduler
        )


class _Timing:
    """Per-pipeline state shared by the probes placed before each stage and after the last.

    A frame pushed into the chain is timed all the way through: the probe before stage ``k``
    measures its call (stage ``k`` plus everything it pushes downstream, synchronously) and
    subtracts what the probe before stage ``k + 1`` measured inside it, which leaves stage
    ``k``'s own share. Frames a stage emits later (a provider's result) are passed untimed.
    """

    __slots__ = ("active", "inner", "last")

    def __init__(self, stages: int) -> None:
        self.active = False
        self.inner = [0.0] * (stages + 1)
        self.last = stages

    def probe(self, k: int, hist: FastHistogram | None) -> Callable[[Forward], Forward]:
        timing, inner, last = self, self.inner, k == self.last

        def make(forward: Forward) -> Forward:
            def on_next(frame: Frame) -> None:
                if not timing.active:
                    if k:  # only the first probe starts a measurement
                        forward(frame)
                        return
                    timing.active = True
                    inner[0] = 0.0
                    start = perf_counter()
                    try:
                        forward(frame)
                    finally:
                        timing.active = False
                    if hist is not None:
                        hist.observe(perf_counter() - start - inner[0])
                    return
                inner[k] = 0.0
                start = perf_counter()
                forward(frame)
                spent = perf_counter() - start
                if not last and hist is not None:
                    hist.observe(spent - inner[k])
                inner[k - 1] += spent

            return on_next

        return make


# ---------------------------------------------------------------------------------- export


def _counter(name: str, doc: str, label: str, values: Mapping[str, float]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _histograms(name: str, doc: str, label: str, table: dict[str, FastHistogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, hist in sorted(table.items()):
        family.add_metric([key], hist.buckets(), hist.total)
    return family


# ---------------------------------------------------------------------------------- one hub's metrics

SYNC_S = 5.0
"""How often a worker writes its numbers to the shared directory (``--workers`` > 1) unless
``metrics.worker_sync_s`` says otherwise. A write collects everything (the sessions, the
process's ``/proc`` figures, ``asyncio.all_tasks()``): ≈ 4 ms of the worker's loop at 1,000
sessions, which every second showed in the ping p99 of the 2000-session benchmark."""

GAUGE_MODES = {
    "process_start_time_seconds": "min",
    "process_max_fds": "max",
}
"""Gauges that are not summed across workers (every other gauge is ``livesum``: a dead
worker's value disappears with it)."""


class HubMetrics:
    """The metrics of one hub (see the module docstring): counters, histograms, the stage
    timing sample and a private ``CollectorRegistry`` (the global ``prometheus_client.REGISTRY``
    is left alone). ``operator_sample``: stage timing runs in one session in this many (the
    first one included), on every frame of it; the other sessions' pipelines are plain
    ``reactivex.compose`` and pay nothing; 0 turns it off. Read when a pipeline is built."""

    def __init__(self, *, operator_sample: int = OPERATOR_SAMPLE) -> None:
        self.operator_sample = operator_sample
        self.streams: dict[str, StreamCounters] = {}
        self.events: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.drops: dict[str, int] = {}
        self.opened: dict[str, int] = {}
        self.closed: dict[tuple[str, str], int] = {}
        self.operators: dict[str, FastHistogram] = {}
        self.providers: dict[str, FastHistogram] = {}
        self.pipelines = 0
        self.key_audio: dict[str, float] = {}
        self.key_sessions: dict[str, int] = {}
        self.key_requests: dict[str, int] = {}
        self._readings: list[Callable[[], Reading | None]] = []
        self._tracked: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pools: dict[int, tuple[str, PoolStats]] = {}
        self._registry: CollectorRegistry | None = None
        self._export: MultiprocessExport | None = None

    @classmethod
    def from_settings(cls, settings: MetricsSettings) -> HubMetrics:
        """A hub's metrics as the ``[metrics]`` settings say."""
        return cls(operator_sample=settings.operator_sample)

    # ------------------------------------------------------------------------------ hooks

    def stream(self, transport: str) -> StreamCounters:
        counters = self.streams.get(transport)
        if counters is None:
            counters = self.streams[transport] = StreamCounters()
        return counters

    def event_out(self, event: Event) -> None:
        events = self.events
        events[event.type] = events.get(event.type, 0) + 1
        if isinstance(event, ErrorEvent):
            self.error(event.code)

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1

    def drop(self, reason: str, count: int = 1) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + count

    def session_opened(self, transport: str) -> None:
        self.opened[transport] = self.opened.get(transport, 0) + 1

    def session_closed(self, transport: str, reason: str | None) -> None:
        key = (transport, reason or "closed")
        self.closed[key] = self.closed.get(key, 0) + 1

    def key_used(self, key_id: str, audio_s: float = 0.0, sessions: int = 0, requests: int = 0) -> None:
        """Usage of one API key identity (its fingerprint or ``anonymous``: the configured keys
        bound the label's values)."""
        if audio_s:
            self.key_audio[key_id] = self.key_audio.get(key_id, 0.0) + audio_s
        if sessions:
            self.key_sessions[key_id] = self.key_sessions.get(key_id, 0) + sessions
        if requests:
            self.key_requests[key_id] = self.key_requests.get(key_id, 0) + requests

    def read_from(self, reading: Reading) -> None:
        """Call ``reading`` at scrape time for a hub's gauges (its sessions, subscribers,
        resumable sessions, its providers' pools). The hub hands its own bound method when it
        is built; it is held weakly, so the metrics never keep a hub alive."""
        ref = weakref.WeakMethod(reading) if hasattr(reading, "__self__") else (lambda: reading)
        self._readings.append(ref)

    def _read(self) -> list[HubReading]:
        found: list[HubReading] = []
        for ref in list(self._readings):
            reading = ref()
            if reading is None:
                self._readings.remove(ref)
            else:
                found.append(reading())
        return found

    def track_pool(self, pool: Pool) -> None:
        """Report ``pool`` although no provider of the hub exposes it (held weakly)."""
        self._tracked.add(pool)

    def _live_pools(self, readings: list[HubReading]) -> list[Pool]:
        """Every pool this hub reports now; remembers each one's stats for good."""
        live: dict[int, Pool] = {id(p): p for p in list(self._tracked)}
        for reading in readings:
            for pool in reading.pools:
                live[id(pool)] = pool
        for pool in live.values():
            if id(pool.stats) not in self._pools:
                self._pools[id(pool.stats)] = (pool.name, pool.stats)
        return list(live.values())

    # ------------------------------------------------------------------------------ stage timing

    def instrument(self, stages: Sequence[tuple[str, Operator]]) -> Operator:
        """Compose one session's named stages like ``reactivex.compose``. In one session out of
        :attr:`operator_sample` (the first one included), each stage's own share of the event
        loop goes into ``asrhub_operator_seconds{operator=name}`` for every frame: time spent in
        later stages (which run inside an earlier stage's ``on_next``) is subtracted. Frames pass
        unchanged and in order; every other session gets exactly ``reactivex.compose``."""
        operators = [op for _name, op in stages]
        every = self.operator_sample
        if every <= 0 or not stages:
            return reactivex.compose(*operators)
        chosen = self.pipelines % every == 0
        self.pipelines += 1
        if not chosen:
            return reactivex.compose(*operators)
        hists = [_histogram(self.operators, name, OPERATOR_BUCKETS) for name, _op in stages]

        def operator(source: Observable[Frame]) -> Observable[Frame]:
            timing = _Timing(len(operators))
            stream = source
            for k, op in enumerate(operators):
                stream = op(_Tap(stream, timing.probe(k, hists[k])))
            return _Tap(stream, timing.probe(len(operators), None))

        return operator

    def provider_latency(self, op: Operator) -> Operator:
        """Wrap a provider stage: ``asrhub_provider_latency_seconds{provider}`` gets the wall
        time from an utterance's end entering the stage (its final ``Segment`` for batch
        engines, the ``vad.speech_ended`` for streaming ones) to its ``transcript.final`` leaving
        it, labelled with the provider that served it (failover included). State per
        subscription, bounded."""
        providers = self.providers

        def operator(source: Observable[Frame]) -> Observable[Frame]:
            by_segment: dict[int, float] = {}
            ended: list[float] = []

            def watch_in(forward: Forward) -> Forward:
                def on_next(frame: Frame) -> None:
                    if isinstance(frame, Segment):
                        if frame.final:
                            if len(by_segment) >= 64:
                                by_segment.pop(next(iter(by_segment)))
                            by_segment[frame.segment_id] = perf_counter()
                    elif isinstance(frame, SpeechEnded) and not by_segment and len(ended) < 64:
                        ended.append(perf_counter())
                    forward(frame)

                return on_next

            def watch_out(forward: Forward) -> Forward:
                def on_next(frame: Frame) -> None:
                    if isinstance(frame, FinalTranscript):
                        start = by_segment.pop(frame.segment_id, None)
                        if start is None and ended:
                            start = ended.pop(0)
                        if start is not None:
                            _histogram(providers, frame.provider, PROVIDER_BUCKETS).observe(
                                perf_counter() - start
                            )
                    elif isinstance(frame, ErrorEvent) and frame.segment_id is not None:
                        by_segment.pop(frame.segment_id, None)
                    forward(frame)

                return on_next

            return _Tap(op(_Tap(source, watch_in)), watch_out)

        return operator

    # ------------------------------------------------------------------------------ export

    @property
    def registry(self) -> CollectorRegistry:
        """This hub's registry: its :class:`HubCollector` and a ``ProcessCollector``. Made on
        first use (a ``SessionContext`` built outside a hub gets a ``HubMetrics`` it never
        scrapes)."""
        if self._registry is None:
            registry = CollectorRegistry()
            registry.register(HubCollector(self))
            ProcessCollector(registry=registry)
            self._registry = registry
        return self._registry

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The ``/metrics`` response: body and content type. ``accept`` is the request's Accept
        header: Prometheus text format 0.0.4 by default, OpenMetrics when the scraper asks for
        it. In a worker of ``asrhub serve --workers N`` (see :meth:`enable_multiprocess`) the
        answer covers every worker of the machine."""
        encoder, content_type = choose_encoder(accept or "")
        export = self._export
        if export is not None:
            export.sync()  # this worker's numbers are fresh; the others' at most SYNC_S old
            return encoder(export.registry), content_type
        return encoder(self.registry), content_type

    def enable_multiprocess(self) -> MultiprocessExport:
        """Make this hub's process one worker of a machine whose ``/metrics`` shows all of them
        (``PROMETHEUS_MULTIPROC_DIR`` must name the directory the supervisor made); then run
        :meth:`sync_forever` on its loop. prometheus-client's files are one set per process:
        the worker's server (:func:`asrhub.commands.server.serve` with ``multiprocess``), which
        runs the process's one hub, is the one caller."""
        if self._export is None:
            self._export = MultiprocessExport(self.registry)
        return self._export

    @property
    def multiprocess(self) -> bool:
        """True in a worker of ``--workers N`` (after :meth:`enable_multiprocess`)."""
        return self._export is not None

    async def sync_forever(self, period_s: float = SYNC_S) -> None:
        """A worker's background task: write its numbers every ``period_s`` seconds."""
        while True:
            if self._export is not None:
                self._export.sync()
            await asyncio.sleep(period_s)

    def names(self) -> Iterable[str]:
        """Every metric family name this hub exports (for docs and tests)."""
        return [metric.name for metric in self.registry.collect()]

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0 when absent), e.g. ``value("asrhub_drops_total", {...})``."""
        found = self.registry.get_sample_value(name, labels or {})
        return 0.0 if found is None else found


class HubCollector(Collector):
    """Turns one :class:`HubMetrics` into metric families at scrape time."""

    def __init__(self, metrics: HubMetrics) -> None:
        self._metrics = weakref.ref(metrics)  # the registry belongs to the metrics, not vice versa

    def collect(self) -> Iterator[Metric]:
        s = self._metrics()
        if s is None:
            return
        readings = s._read()
        active: dict[str, int] = {}
        subscriptions = 0
        for reading in readings:
            for transport, count in reading.sessions.items():
                active[transport] = active.get(transport, 0) + count
            subscriptions += reading.subscriptions
        gauge = GaugeMetricFamily("asrhub_sessions_active", "Open sessions", labels=["transport"])
        for transport in sorted({*active, *s.opened}):
            gauge.add_metric([transport], active.get(transport, 0))
        yield gauge
        yield _counter("asrhub_sessions_opened", "Sessions opened", "transport", s.opened)
        closed = CounterMetricFamily(
            "asrhub_sessions_closed", "Sessions closed", labels=["transport", "reason"]
        )
        for (transport, reason), value in sorted(s.closed.items()):
            closed.add_metric([transport, reason], value)
        yield closed
        streams = sorted(s.streams.items())
        yield _counter(
            "asrhub_audio_frames_in",
            "Audio frames received",
            "transport",
            {t: c.frames_in for t, c in streams},
        )
        yield _counter(
            "asrhub_audio_bytes_in", "Audio bytes received", "transport", {t: c.bytes_in for t, c in streams}
        )
        yield _counter("asrhub_events_out", "Events emitted by sessions", "type", s.events)
        yield _counter("asrhub_errors", "Error events and refused requests", "code", s.errors)
        yield _counter(
            "asrhub_key_audio_seconds", "Audio seconds transcribed, per API key id", "key", s.key_audio
        )
        yield _counter("asrhub_key_sessions", "Sessions opened, per API key id", "key", s.key_sessions)
        yield _counter(
            "asrhub_key_requests",
            "HTTP requests, gRPC calls and Wyoming sessions, per API key id",
            "key",
            s.key_requests,
        )
        live = s._live_pools(readings)
        timing: dict[str, FastHistogram] = {}
        abandoned: dict[str, int] = {}
        drops = dict(s.drops)
        for name, stats in s._pools.values():
            _histogram(timing, name, PROVIDER_BUCKETS).add(stats.timing)
            abandoned[name] = abandoned.get(name, 0) + stats.abandoned
            for reason, count in (("partial_shed", stats.shed), ("pool_full", stats.full)):
                if count:
                    drops[reason] = drops.get(reason, 0) + count
        yield _counter("asrhub_drops", "Data dropped on purpose", "reason", drops)
        yield _histograms(
            "asrhub_operator_seconds", "Event-loop time per frame per stage", "operator", s.operators
        )
        yield _histograms(
            "asrhub_provider_latency_seconds", "Utterance end to final", "provider", s.providers
        )
        yield _histograms("asrhub_inference_seconds", "Worker time per inference call", "pool", timing)
        yield _counter(
            "asrhub_inference_abandoned", "Inference calls abandoned after a timeout", "pool", abandoned
        )
        queued: dict[str, int] = {}
        busy: dict[str, int] = {}
        for pool in live:
            queued[pool.name] = queued.get(pool.name, 0) + pool.queued
            busy[pool.name] = busy.get(pool.name, 0) + pool.busy
        depth = GaugeMetricFamily(
            "asrhub_inference_queue_depth", "Calls waiting for a worker", labels=["pool"]
        )
        working = GaugeMetricFamily("asrhub_inference_busy", "Workers busy", labels=["pool"])
        for name in sorted(queued):
            depth.add_metric([name], queued[name])
            working.add_metric([name], busy[name])
        yield depth
        yield working
        yield GaugeMetricFamily(
            "asrhub_subscriptions", "Live subscribers of session events", value=subscriptions
        )
        resumable = GaugeMetricFamily(
            "asrhub_resumable_sessions", "Sessions holding a resume token", labels=["state"]
        )
        detached = sum(r.detached for r in readings)
        resumable.add_metric(["attached"], sum(r.resumable for r in readings) - detached)
        resumable.add_metric(["detached"], detached)
        yield resumable
        decoders = GaugeMetricFamily(
            "asrhub_decoder_threads", "Compressed-audio decoder threads", labels=["state"]
        )
        decoders.add_metric(["running"], sum(r.decoders_running for r in readings))
        decoders.add_metric(["waiting"], sum(r.decoders_waiting for r in readings))
        yield decoders
        uploads = GaugeMetricFamily("asrhub_uploads", "Uploads decoding or transcribing", labels=["state"])
        uploads.add_metric(["running"], sum(r.uploads_running for r in readings))
        uploads.add_metric(["waiting"], sum(r.uploads_waiting for r in readings))
        yield uploads
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped off the event loop
            tasks = 0
        yield GaugeMetricFamily(
            "asrhub_event_loop_tasks", "asyncio tasks alive on the hub's loop", value=tasks
        )


class MultiprocessExport:
    """Writes this worker's metrics into prometheus-client's multiprocess directory
    (``PROMETHEUS_MULTIPROC_DIR``), and reads every worker's back for a scrape.

    The hot path is unchanged (plain ints, :class:`FastHistogram` lists); :meth:`sync` copies
    what :class:`HubCollector` and the process collector report into prometheus-client's
    memory-mapped values (one file per worker and metric type): counters and histogram buckets
    are summed across workers by ``MultiProcessCollector`` (a dead worker's counts stay, as
    counters must), gauges are ``livesum`` (the supervisor calls ``mark_process_dead`` when a
    worker exits) except the ones in :data:`GAUGE_MODES`. The CPU/memory ``process_*`` series
    are thus the sum over the workers."""

    def __init__(self, source: CollectorRegistry) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector
        from prometheus_client.values import MultiProcessValue

        self._source = source
        self._value_class = MultiProcessValue()  # type: ignore[no-untyped-call]
        self._values: dict[tuple[str, str, tuple[tuple[str, str], ...]], Any] = {}
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]

    def _write(self, typ: str, family: Metric, name: str, labels: dict[str, str], value: float) -> None:
        items = tuple(sorted(labels.items()))
        key = (typ, name, items)
        slot = self._values.get(key)
        if slot is None:
            mode = GAUGE_MODES.get(family.name, "livesum") if typ == "gauge" else ""
            slot = self._values[key] = self._value_class(
                typ,
                family.name,
                name,
                tuple(k for k, _ in items),
                tuple(v for _, v in items),
                family.documentation,
                multiprocess_mode=mode,
            )
        slot.set(value)

    def sync(self) -> None:
        for family in self._source.collect():
            typ = family.type
            if typ == "histogram":
                previous: dict[tuple[tuple[str, str], ...], float] = {}
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        rest = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
                        below = previous.get(rest, 0.0)
                        previous[rest] = sample.value
                        self._write(typ, family, sample.name, sample.labels, sample.value - below)
                    elif sample.name.endswith("_sum"):
                        self._write(typ, family, sample.name, sample.labels, sample.value)
            elif typ in ("counter", "gauge"):
                for sample in family.samples:
                    if not sample.name.endswith("_created"):
                        self._write(typ, family, sample.name, sample.labels, sample.value)
