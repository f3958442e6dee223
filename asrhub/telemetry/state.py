"""The process's tracer: None while tracing is off (every hook tests this first, and then
imports nothing)."""

from __future__ import annotations

from typing import Any

tracer: Any = None
"""An ``opentelemetry.trace.Tracer`` once :func:`asrhub.telemetry.install` ran with tracing on."""
provider: Any = None
"""The SDK ``TracerProvider`` behind :data:`tracer` (flushed and shut down by ``shutdown``)."""
settings: Any = None
"""The :class:`~asrhub.settings.schema.TelemetrySettings` installed (a Ray replica gets them)."""
