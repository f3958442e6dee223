"""The spans of one hub process, read with the SDK's own in-memory exporter: a client's
``traceparent`` parents the session; each utterance and each provider tried (failover
included) has its span; log lines under a span carry its ids; off, nothing is imported."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asrhub import logging as hub_logging
from asrhub import telemetry
from asrhub.logging import get_logger
from asrhub.providers.whisper import WhisperProvider
from asrhub.settings.schema import LogSettings, TelemetrySettings
from tests.audio_utils import fixture, load_wav
from tests.providers.conftest import FakeFailingProvider, finals, make_hub, run_session

from .collector import Collector


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    with Collector() as collector:  # the OTLP exporter's endpoint: a real receiver, not a dead port
        settings = TelemetrySettings(enabled=True, endpoint=collector.endpoint)
        assert telemetry.install(settings, processor=SimpleSpanProcessor(exporter))
        try:
            yield exporter
        finally:
            telemetry.shutdown()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_client_trace_parents_the_session_and_failover_gets_one_call_span_per_provider(
    memory: InMemorySpanExporter, whisper: WhisperProvider
) -> None:
    dead = FakeFailingProvider(whisper, name="dead")
    hub = make_hub({"dead": dead, "whisper": whisper})
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    samples, _ = load_wav(fixture("quick_fox.wav"))
    with telemetry.incoming({"Traceparent": f"00-{trace_id}-{parent}-01"}):  # as the door does
        events = await run_session(hub, samples, {"provider": ["dead", "whisper"], "partials": False})
    assert len(finals(events)) == 1 and finals(events)[0].provider == "whisper"
    spans = memory.get_finished_spans()
    (session,) = named(spans, "session")
    (utterance,) = named(spans, "utterance")
    calls = sorted(named(spans, "engine.call"), key=lambda s: dict(s.attributes or {})["asrhub.attempt"])
    assert {f"{s.context.trace_id:032x}" for s in spans} == {trace_id}
    assert session.parent is not None and f"{session.parent.span_id:016x}" == parent
    assert utterance.parent is not None and utterance.parent.span_id == session.context.span_id
    assert [c.parent.span_id for c in calls if c.parent] == [utterance.context.span_id] * 2
    attributes = [dict(c.attributes or {}) for c in calls]
    audio = [a.pop("asrhub.audio_s") for a in attributes]
    assert attributes == [
        {"asrhub.provider": "dead", "asrhub.attempt": 1, "asrhub.failover": False},
        {"asrhub.provider": "whisper", "asrhub.attempt": 2, "asrhub.failover": True},
    ]
    assert audio[0] == audio[1] and 2.5 < audio[0] < 4.0, audio  # the utterance as the VAD cut it
    assert not calls[0].status.is_ok and calls[1].status.is_unset
    assert calls[0].events[0].name == "exception"  # the dead provider's error, recorded
    assert session.attributes is not None and session.attributes["asrhub.close_reason"] == "end"


def test_log_lines_under_a_span_carry_its_ids(memory: InMemorySpanExporter) -> None:
    stream = io.StringIO()
    hub_logging.configure(LogSettings(format="json"), stream=stream)
    try:
        log = get_logger("asrhub.test")
        log.info("outside")
        span = telemetry.session_span("s1", "test", "none")
        from opentelemetry import trace

        with trace.use_span(span, end_on_exit=True):
            log.info("inside")
    finally:
        hub_logging.reset()
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in outside and "span_id" not in outside
    ctx = span.get_span_context()
    assert (inside["trace_id"], inside["span_id"]) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(RuntimeError, match=r"asrhub\[otel\]"):
        telemetry.install(TelemetrySettings(enabled=True))
    assert telemetry.installed() is None


def test_off_a_session_imports_nothing_of_opentelemetry() -> None:
    code = """
import asyncio, sys
from asrhub import telemetry
from asrhub.settings.schema import Settings, TelemetrySettings
from asrhub.wiring import build_hub

async def main():
    assert not telemetry.install(TelemetrySettings())
    hub = build_hub(Settings(default_provider="none"))
    session = hub.open({"provider": "none"})
    assert session.ctx.span is None
    await session.feed(bytes(3200))
    session.close()
    await hub.shutdown(grace_s=1.0)

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


async def test_an_early_final_decode_is_an_utterance_span_of_the_session(
    memory: InMemorySpanExporter, whisper: WhisperProvider
) -> None:
    """The decode started at a pause runs in its own task, outside the final's span: it must
    still hang under the session (not under whatever context was current when the pause came)."""
    from reactivex.subject import Subject

    from asrhub.config import Limits, SessionConfig
    from asrhub.flow import Pending
    from asrhub.frames import FinalTranscript, Frame, Segment
    from asrhub.session.context import Context

    span = telemetry.session_span("s-early", "test", "whisper")
    ctx = Context("s-early", SessionConfig(), Limits(), (whisper,), Pending(3), span=span)
    source: Subject[Frame] = Subject()
    out: list[Frame] = []
    done = asyncio.Event()
    source.pipe(whisper.stage(ctx)).subscribe(out.append, lambda e: done.set(), done.set)
    x, _ = load_wav(fixture("quick_fox.wav"))
    end = len(x) / 16_000
    source.on_next(Segment(1, x, 16_000, 0.0, end, final=False, speculative=True))
    source.on_next(Segment(1, x, 16_000, 0.0, end, final=True, voiced_end=end))
    source.on_completed()
    await asyncio.wait_for(done.wait(), 60)
    telemetry.end_session(span, "end")
    assert [f.segment_id for f in out if isinstance(f, FinalTranscript)] == [1]
    assert ctx.early_finals.used == 1
    spans = memory.get_finished_spans()
    (early,) = [s for s in named(spans, "utterance") if (s.attributes or {}).get("asrhub.speculative")]
    (call,) = named(spans, "engine.call")
    assert early.parent is not None and early.parent.span_id == span.get_span_context().span_id
    assert call.parent is not None and call.parent.span_id == early.context.span_id
