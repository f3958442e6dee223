"""A structlog processor: ``trace_id`` and ``span_id`` on every line written under a span."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from asrhub.telemetry import state


def add_trace_ids(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add the current span's ids (hex, as trace back-ends show them); nothing when tracing is
    off or no span is current."""
    if state.tracer is None:
        return event_dict
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", f"{ctx.trace_id:032x}")
        event_dict.setdefault("span_id", f"{ctx.span_id:016x}")
    return event_dict
