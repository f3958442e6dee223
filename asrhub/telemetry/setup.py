"""Turn tracing on for this process from ``[telemetry]`` and the standard ``OTEL_*`` variables.

The exporter is OTLP over HTTP/protobuf (``opentelemetry-exporter-otlp-proto-http``: pure
Python, no gRPC build), behind the SDK's ``BatchSpanProcessor`` (``OTEL_BSP_*`` tune it), so a
span's end costs a queue append on the loop and the export runs in the SDK's own thread.
Sampling is parent-based: a client's sampled ``traceparent`` is followed; a root is sampled at
``sample_ratio``.
"""

from __future__ import annotations

import os
from typing import Any

from asrhub.settings.schema import TelemetrySettings
from asrhub.telemetry import state

EXTRA_HINT = "tracing needs the otel extra: pip install 'asrhub[otel]'"


def install(settings: TelemetrySettings, *, service_suffix: str = "", processor: Any = None) -> bool:
    """Trace this process as ``settings`` say; False (and nothing imported) when they say off.
    ``service_suffix`` names a Ray replica apart from its hub; ``processor``: an extra span
    processor (a test's in-memory exporter). Raises ``RuntimeError`` naming the extra when it
    is missing. Installing again replaces the previous tracer (its spans are flushed first)."""
    if not settings.enabled:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise RuntimeError(f"{EXTRA_HINT} ({exc.name} is missing)") from None
    shutdown()
    name = settings.service_name or os.environ.get("OTEL_SERVICE_NAME") or "asrhub"
    resource = Resource.create({"service.name": name + service_suffix})
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio))
    )
    endpoint = settings.endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    exporter = (
        OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces") if endpoint else OTLPSpanExporter()
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if processor is not None:
        provider.add_span_processor(processor)
    state.provider, state.settings = provider, settings
    state.tracer = provider.get_tracer("asrhub")
    return True


def installed() -> TelemetrySettings | None:
    """The settings tracing runs with in this process (None: off)."""
    return state.settings if state.tracer is not None else None


def flush(timeout_s: float = 10.0) -> None:
    """Export every ended span now (a test, a shutdown)."""
    if state.provider is not None:
        state.provider.force_flush(int(timeout_s * 1000))


def shutdown() -> None:
    """Flush and stop tracing (idempotent)."""
    provider = state.provider
    state.tracer = state.provider = state.settings = None
    if provider is not None:
        provider.shutdown()
