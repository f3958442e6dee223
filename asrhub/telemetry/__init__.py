"""OpenTelemetry traces of a hub: one tree per session, across nodes and Ray replicas.

::

    (client's traceparent)                                 W3C header / gRPC metadata, honoured
      └─ session            node A   (open … close)
           ├─ utterance     one per final
           │    └─ engine.call   one per provider tried (attempt, failover, audio seconds)
           │         └─ whisper.replica   inside the Ray actor, from the context in the Clip
           └─ resume        node B, from the trace context kept with the resume record in Redis
                └─ session  node B   └─ utterance └─ engine.call └─ …

Optional: with ``[telemetry] enabled = false`` (the default), or without the ``otel`` extra,
nothing imports OpenTelemetry, every hook is a test of one module attribute, and no hook runs
per audio frame (they run per session, per utterance, per engine call). :mod:`.state` holds the
process's tracer (OpenTelemetry's own provider is process-global as well); :mod:`.setup`
installs it from the settings and the ``OTEL_*`` variables; :mod:`.spans` makes the spans;
:mod:`.carrier` moves a span context through headers, Redis and Ray call arguments;
:mod:`.log_ids` adds ``trace_id`` / ``span_id`` to every log line written under a span.
"""

from asrhub.telemetry.carrier import incoming, inject, traceparent
from asrhub.telemetry.log_ids import add_trace_ids
from asrhub.telemetry.setup import install, installed, shutdown
from asrhub.telemetry.spans import end_session, engine_call, remote_spans, resumed, session_span, utterance

__all__ = [
    "add_trace_ids",
    "end_session",
    "engine_call",
    "incoming",
    "inject",
    "install",
    "installed",
    "remote_spans",
    "resumed",
    "session_span",
    "shutdown",
    "traceparent",
    "utterance",
]
