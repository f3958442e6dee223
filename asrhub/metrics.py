"""Prometheus metrics of one hub process, kept cheap enough for the per-chunk hot path.

Nothing here calls ``prometheus_client`` per audio chunk. The hot path bumps plain ``int``
attributes (``StreamCounters``) or a :class:`FastHistogram`'s bucket list; a custom collector
turns them into metric families when ``/metrics`` is scraped, and reads the gauges (active
sessions, subscriptions, inference queue depth, asyncio tasks) from the live objects at that
moment. Everything is written on the event loop thread, like the rest of the hub; a scrape from
another thread reads ints, which the GIL keeps whole.

Hooks the core calls (each a dict or attribute increment)::

    stream(transport) -> StreamCounters      Session: .frames_in / .bytes_in per feed
    event_out(event)                         Session: every event it emits (errors by code too)
    session_opened(transport) / session_closed(transport, reason)      Hub
    error(code)                              an error not emitted by a session (a refused open…)
    drop(reason)                             data dropped on purpose: partial_shed, partial_dropped,
                                             slow_consumer, too_large, pool_full
    track_hub(hub) / track_pool(pool)        gauges read at scrape time (weak references): sessions,
                                             subscriptions, resumable sessions, pools, tasks
    inference_time(pool, s) / inference_abandoned(pool)                InferencePool
    instrument(stages) / provider_latency(op)   compose / wrap pipeline stages (composition root)

Transports serve it with ``body, content_type = asrhub.metrics.render(request.headers.get("Accept"))``.
"""

from __future__ import annotations

import asyncio
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

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

from .frames import ErrorEvent, Event, FinalTranscript, Frame, Segment, SpeechEnded
from .settings import MetricsSettings

Scheduler = SchedulerBase | None

if TYPE_CHECKING:
    from .hub import Hub
    from .inference import InferencePool
    from .pipeline import Operator

OPERATOR_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1)
"""Seconds of event-loop time one stage spends on one frame (its own share, not downstream's)."""
PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
"""Seconds from the end of an utterance reaching the provider stage to its final leaving it."""


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


class StreamCounters:
    """Audio received on one transport; a session bumps these in ``feed``."""

    __slots__ = ("bytes_in", "frames_in")

    def __init__(self) -> None:
        self.frames_in = 0
        self.bytes_in = 0


class _State:
    def __init__(self) -> None:
        self.streams: dict[str, StreamCounters] = {}
        self.events: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.drops: dict[str, int] = {}
        self.opened: dict[str, int] = {}
        self.closed: dict[tuple[str, str], int] = {}
        self.abandoned: dict[str, int] = {}
        self.operators: dict[str, FastHistogram] = {}
        self.providers: dict[str, FastHistogram] = {}
        self.inference: dict[str, FastHistogram] = {}
        self.hubs: weakref.WeakSet[Hub] = weakref.WeakSet()
        self.pools: weakref.WeakSet[InferencePool] = weakref.WeakSet()
        self.pipelines = 0


_state = _State()
operator_sample = 8
"""Stage timing runs in one session in this many (the first one included), on every frame of
it; the other sessions' pipelines are plain ``reactivex.compose`` and pay nothing. 0 turns it
off. Read when a pipeline is built; see :func:`configure`."""


def configure(settings: MetricsSettings) -> None:
    """Apply the ``[metrics]`` settings (the CLI calls this once at start-up)."""
    global operator_sample
    operator_sample = settings.operator_sample


# ---------------------------------------------------------------------------------- hooks


def stream(transport: str) -> StreamCounters:
    counters = _state.streams.get(transport)
    if counters is None:
        counters = _state.streams[transport] = StreamCounters()
    return counters


def event_out(event: Event) -> None:
    events = _state.events
    events[event.type] = events.get(event.type, 0) + 1
    if isinstance(event, ErrorEvent):
        error(event.code)


def error(code: str) -> None:
    _state.errors[code] = _state.errors.get(code, 0) + 1


def drop(reason: str, count: int = 1) -> None:
    _state.drops[reason] = _state.drops.get(reason, 0) + count


def session_opened(transport: str) -> None:
    _state.opened[transport] = _state.opened.get(transport, 0) + 1


def session_closed(transport: str, reason: str | None) -> None:
    key = (transport, reason or "closed")
    _state.closed[key] = _state.closed.get(key, 0) + 1


def track_hub(hub: Hub) -> None:
    _state.hubs.add(hub)


def track_pool(pool: InferencePool) -> None:
    _state.pools.add(pool)


def inference_time(pool: str, seconds: float) -> None:
    _histogram(_state.inference, pool, PROVIDER_BUCKETS).observe(seconds)


def inference_abandoned(pool: str) -> None:
    _state.abandoned[pool] = _state.abandoned.get(pool, 0) + 1


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


def instrument(stages: Sequence[tuple[str, Operator]]) -> Operator:
    """Compose one session's named stages like ``reactivex.compose``. In one session out of
    :data:`operator_sample` (the first one included), each stage's own share of the event loop
    goes into ``asrhub_operator_seconds{operator=name}`` for every frame: time spent in later
    stages (which run inside an earlier stage's ``on_next``) is subtracted. Frames pass
    unchanged and in order; every other session gets exactly ``reactivex.compose``."""
    operators = [op for _name, op in stages]
    every = operator_sample
    if every <= 0 or not stages:
        return reactivex.compose(*operators)
    chosen = _state.pipelines % every == 0
    _state.pipelines += 1
    if not chosen:
        return reactivex.compose(*operators)
    hists = [_histogram(_state.operators, name, OPERATOR_BUCKETS) for name, _op in stages]

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        timing = _Timing(len(operators))
        stream = source
        for k, op in enumerate(operators):
            stream = op(_Tap(stream, timing.probe(k, hists[k])))
        return _Tap(stream, timing.probe(len(operators), None))

    return operator


def provider_latency(op: Operator) -> Operator:
    """Wrap a provider stage: ``asrhub_provider_latency_seconds{provider}`` gets the wall time
    from an utterance's end entering the stage (its final ``Segment`` for batch engines, the
    ``vad.speech_ended`` for streaming ones) to its ``transcript.final`` leaving it, labelled
    with the provider that served it (failover included). State per subscription, bounded."""

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
                        _histogram(_state.providers, frame.provider, PROVIDER_BUCKETS).observe(
                            perf_counter() - start
                        )
                elif isinstance(frame, ErrorEvent) and frame.segment_id is not None:
                    by_segment.pop(frame.segment_id, None)
                forward(frame)

            return on_next

        return _Tap(op(_Tap(source, watch_in)), watch_out)

    return operator


# ---------------------------------------------------------------------------------- export


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _histograms(name: str, doc: str, label: str, table: dict[str, FastHistogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label])
    for key, hist in sorted(table.items()):
        family.add_metric([key], hist.buckets(), hist.total)
    return family


class HubCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        s = _state
        active: dict[str, int] = {}
        subscriptions = 0
        for hub in list(s.hubs):
            for session in list(hub.sessions.values()):
                transport = session.ctx.transport
                active[transport] = active.get(transport, 0) + 1
                subscriptions += session.subscribers
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
        yield _counter("asrhub_drops", "Data dropped on purpose", "reason", s.drops)
        yield _histograms(
            "asrhub_operator_seconds", "Event-loop time per frame per stage", "operator", s.operators
        )
        yield _histograms(
            "asrhub_provider_latency_seconds", "Utterance end to final", "provider", s.providers
        )
        yield _histograms("asrhub_inference_seconds", "Worker time per inference call", "pool", s.inference)
        yield _counter(
            "asrhub_inference_abandoned", "Inference calls abandoned after a timeout", "pool", s.abandoned
        )
        depth = GaugeMetricFamily(
            "asrhub_inference_queue_depth", "Calls waiting for a worker", labels=["pool"]
        )
        busy = GaugeMetricFamily("asrhub_inference_busy", "Workers busy", labels=["pool"])
        for pool in sorted(s.pools, key=lambda p: p.name):
            depth.add_metric([pool.name], pool.queued)
            busy.add_metric([pool.name], pool.busy)
        yield depth
        yield busy
        yield GaugeMetricFamily(
            "asrhub_subscriptions", "Live subscribers of session events", value=subscriptions
        )
        resumable = GaugeMetricFamily(
            "asrhub_resumable_sessions", "Sessions holding a resume token", labels=["state"]
        )
        held = [getattr(hub, "resumes", None) for hub in list(s.hubs)]
        detached = sum(r.detached for r in held if r is not None)
        resumable.add_metric(["attached"], sum(len(r) for r in held if r is not None) - detached)
        resumable.add_metric(["detached"], detached)
        yield resumable
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped off the event loop
            tasks = 0
        yield GaugeMetricFamily(
            "asrhub_event_loop_tasks", "asyncio tasks alive on the hub's loop", value=tasks
        )


REGISTRY = CollectorRegistry()
"""The hub's private registry (the global ``prometheus_client.REGISTRY`` is left alone)."""
REGISTRY.register(HubCollector())
ProcessCollector(registry=REGISTRY)


def render(accept: str | None = None, registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The ``/metrics`` response: body and content type. ``accept`` is the request's Accept
    header: Prometheus text format 0.0.4 by default, OpenMetrics when the scraper asks for it.
    In a worker of ``asrhub serve --workers N`` (see :func:`enable_multiprocess`) the answer
    covers every worker of the machine."""
    encoder, content_type = choose_encoder(accept or "")
    if registry is None:
        export = _export
        if export is not None:
            export.sync()  # this worker's numbers are fresh; the others' at most SYNC_S old
            registry = export.registry
        else:
            registry = REGISTRY
    return encoder(registry), content_type


# ---------------------------------------------------------------------------------- workers

SYNC_S = 1.0
"""How often a worker writes its numbers to the shared directory (``--workers`` > 1)."""

GAUGE_MODES = {
    "process_start_time_seconds": "min",
    "process_max_fds": "max",
}
"""Gauges that are not summed across workers (every other gauge is ``livesum``: a dead
worker's value disappears with it)."""


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

    def __init__(self, source: CollectorRegistry = REGISTRY) -> None:
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


_export: MultiprocessExport | None = None


def enable_multiprocess() -> MultiprocessExport:
    """Make this process one worker of a machine whose ``/metrics`` shows all of them
    (``PROMETHEUS_MULTIPROC_DIR`` must name the directory the supervisor made). Call once, in
    the worker, before serving; then run :func:`sync_forever` on its loop."""
    global _export
    if _export is None:
        _export = MultiprocessExport()
    return _export


def multiprocess() -> bool:
    """True in a worker of ``--workers N`` (after :func:`enable_multiprocess`)."""
    return _export is not None


async def sync_forever(period_s: float = SYNC_S) -> None:
    """A worker's background task: write its numbers every ``period_s`` seconds."""
    while True:
        if _export is not None:
            _export.sync()
        await asyncio.sleep(period_s)


def names(registry: CollectorRegistry = REGISTRY) -> Iterable[str]:
    """Every metric family name the registry exports (for docs and tests)."""
    return [metric.name for metric in registry.collect()]


def value(name: str, labels: dict[str, str] | None = None) -> float:
    """One sample's current value (0 when absent), e.g. ``value("asrhub_drops_total", {...})``."""
    found = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if found is None else found
