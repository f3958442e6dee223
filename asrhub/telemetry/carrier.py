"""A span context in transit, as W3C trace context (``traceparent``, ``tracestate``): from a
client's handshake headers, into the resume record in Redis, into a Ray call's arguments."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from asrhub.telemetry import state


def inject() -> dict[str, str] | None:
    """The current span's context as a carrier dict (None: tracing off or no span current)."""
    if state.tracer is None:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def traceparent(span: Any) -> str:
    """``span``'s W3C ``traceparent`` ("" for None); an unsampled span's says so, and a span
    continued from it is not sampled either."""
    if span is None:
        return ""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def extract(carrier: Mapping[str, str] | None) -> Any:
    """An OpenTelemetry context from ``carrier`` (the current one when it holds none)."""
    from opentelemetry import propagate

    return propagate.extract(dict(carrier or {}))


@contextlib.contextmanager
def incoming(headers: Mapping[str, str]) -> Iterator[None]:
    """Make the ``traceparent`` a client sent (HTTP or WebSocket handshake headers, gRPC
    metadata) the current context while its request is handled, so the session it opens is a
    child of the client's span. Nothing happens when tracing is off or there is none."""
    if state.tracer is None:
        yield
        return
    carrier = {k.lower(): v for k, v in headers.items() if k.lower() in ("traceparent", "tracestate")}
    if "traceparent" not in carrier:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)
