"""The hub's spans. Each function is a no-op (None, or a shared null context) while tracing is
off, decided by one attribute test; none of them runs per audio frame.

* ``session``: from open to close (:func:`session_span`, :func:`end_session`); its parent is
  the context current when the session opens — a client's ``traceparent``
  (:func:`asrhub.telemetry.incoming`), or the ``resume`` span on the node that resumed it;
* ``utterance``: one per final, from its Segment to its final (:func:`utterance`), a child of
  the session's span (explicitly: the engine stage's task may run in another context);
* ``engine.call``: one per provider tried for an utterance (:func:`engine_call`), a child of
  the current span; an engine that runs elsewhere carries :func:`asrhub.telemetry.inject`'s
  carrier to it, and the far side opens its spans from it (:func:`remote_spans`);
* ``resume``: on the node that claimed a session from the cluster log (:func:`resumed`), a
  child of the first node's session span (its ``traceparent`` is in the resume record).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from asrhub.telemetry import state

_NULL = contextlib.nullcontext()


def session_span(session_id: str, transport: str, providers: str) -> Any:
    """Start a session's span (None: tracing is off), a child of the current context."""
    tracer = state.tracer
    if tracer is None:
        return None
    attributes = {
        "asrhub.session_id": session_id,
        "asrhub.transport": transport,
        "asrhub.provider": providers,
    }
    return tracer.start_span("session", attributes=attributes)


def end_session(span: Any, reason: str) -> None:
    if span is None:
        return
    span.set_attribute("asrhub.close_reason", reason)
    if reason in ("error", "timeout"):
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, reason))
    span.end()


def utterance(
    session: Any, segment_id: int, start: float, end: float, *, speculative: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """The span of one utterance (current inside the ``with``), a child of ``session``'s.
    ``speculative``: an early final's decode, started at a pause (it may become the final)."""
    tracer = state.tracer
    if tracer is None or session is None:
        return _NULL
    from opentelemetry import trace

    attributes: dict[str, Any] = {"asrhub.segment_id": segment_id, "asrhub.audio_s": round(end - start, 3)}
    if speculative:
        attributes["asrhub.speculative"] = True
    span = tracer.start_span("utterance", context=trace.set_span_in_context(session), attributes=attributes)
    return trace.use_span(span, end_on_exit=True)


def engine_call(
    provider: str, attempt: int, audio_s: float, model: str | None = None
) -> contextlib.AbstractContextManager[Any]:
    """The span of one provider call (current inside the ``with``); ``attempt`` counts from 1,
    and an attempt after the first is a failover. An exception is recorded on it."""
    tracer = state.tracer
    if tracer is None:
        return _NULL
    attributes = {
        "asrhub.provider": provider,
        "asrhub.attempt": attempt,
        "asrhub.failover": attempt > 1,
        "asrhub.audio_s": round(audio_s, 3),
    }
    if model:
        attributes["asrhub.model"] = model
    span: contextlib.AbstractContextManager[Any] = tracer.start_as_current_span(
        "engine.call", attributes=attributes
    )
    return span


@contextlib.contextmanager
def resumed(parent: str, session_id: str, node: str) -> Iterator[None]:
    """A ``resume`` span, current inside the ``with`` (so the session opened there is its
    child), a child of ``parent`` (the first node's session ``traceparent``; "": a new root)."""
    tracer = state.tracer
    if tracer is None:
        yield
        return
    from asrhub.telemetry.carrier import extract

    context = extract({"traceparent": parent}) if parent else None
    attributes = {"asrhub.session_id": session_id, "asrhub.node": node}
    with tracer.start_as_current_span("resume", context=context, attributes=attributes):
        yield


@contextlib.contextmanager
def remote_spans(
    name: str, carriers: Iterable[Mapping[str, str] | None], attributes: Mapping[str, Any]
) -> Iterator[None]:
    """In an engine's own process (a Ray replica): one span ``name`` per carrier a caller sent
    (one per clip of a batch, each the child of its utterance's ``engine.call``), all open for
    the ``with``. Carriers that are None (their caller does not trace) get none."""
    tracer = state.tracer
    wanted = [c for c in carriers if c]
    if tracer is None or not wanted:
        yield
        return
    from asrhub.telemetry.carrier import extract

    spans = [tracer.start_span(name, context=extract(c), attributes=dict(attributes)) for c in wanted]
    try:
        yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
        raise
    finally:
        for span in spans:
            span.end()
