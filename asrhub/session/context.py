"""The concrete session context: what the hub builds for one session and hands to its chain.

Operators and engine stages see it through the :class:`asrhub.plugin.SessionContext` Protocol
(the plug-in contract, in the bottom room); the session itself and the composition root
(:mod:`asrhub.wiring`) use this class, which also carries the hub's shared pieces: its decoder
slots, circuit breakers and metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from asrhub.config import Limits, SessionConfig
from asrhub.diarize.tracker import SpeakerMemory
from asrhub.engine.breaker import Breakers
from asrhub.flow import Pending, Slots
from asrhub.frames import Event
from asrhub.logging import get_logger
from asrhub.metrics.hub import HubMetrics
from asrhub.plugin import CallStats, EarlyFinals, Operator, Provider, UtteranceRouter
from asrhub.usage import SessionMeter


@dataclass(frozen=True, slots=True)
class Context:
    """Per-session facts handed to the pipeline factory and to a provider's stage (the concrete
    :class:`~asrhub.plugin.SessionContext`). Frozen: a live update travels the stream as a
    frame, it never changes the context."""

    session_id: str
    config: SessionConfig
    """The config the session started with (see :attr:`asrhub.plugin.SessionContext.config`)."""
    limits: Limits
    providers: tuple[Provider, ...]
    """The resolved failover list; empty for provider ``none``."""
    pending: Pending
    log: Any = field(default_factory=lambda: get_logger("asrhub.session"))
    transport: str = "inproc"
    decoder_slots: Slots | None = None
    """The hub's bound on compressed-audio decoder threads (None: unbounded, outside a hub)."""
    breakers: Breakers = field(default_factory=Breakers)
    """The hub's circuit breakers, one per provider, shared by every session (see
    :mod:`asrhub.engine.breaker`); a context built outside a hub gets its own."""
    metrics: HubMetrics = field(default_factory=HubMetrics)
    """The hub's metrics (see :mod:`asrhub.metrics.hub`); a context built outside a hub gets its own."""
    early_finals: EarlyFinals = field(default_factory=EarlyFinals)
    """The session's early-final decodes (counted by the batch stage)."""
    key: str | None = None
    """The API key identity the session counts against (None: none); shares of hub-wide
    resources (decoder threads) are per key."""
    usage: SessionMeter | None = None
    """The session's audio meter (its key's usage and quota; :mod:`asrhub.usage`): the chain's
    ``meter_audio`` stage counts decoded audio into it. None outside a hub."""
    span: Any = None
    """The session's trace span (:mod:`asrhub.telemetry`); None while tracing is off."""
    trace: SessionTrace | None = None
    """The session's recorder (config ``trace``, or picked by ``trace.sample_rate``; see
    :mod:`asrhub.trace`); None: not recorded."""
    stats: CallStats | None = None
    """The hub's live engine figures (:mod:`asrhub.routing.stats`), fed by every engine call."""
    router: UtteranceRouter | None = None
    """A ``provider: "auto"`` session's router (:mod:`asrhub.routing`): its engines are chosen
    per utterance; None: the session's ``providers`` serve in their order."""
    speakers: SpeakerMemory = field(default_factory=SpeakerMemory)
    """A ``diarize`` session's live speaker trackers (its chain's ``speaker_labels``), whose state
    goes with its cluster resume record; a session resumed from that record starts from it."""


class SessionTrace(Protocol):
    """What a session and its chain tell its trace recorder (:mod:`asrhub.trace.recorder`)."""

    def audio(self, data: bytes) -> None:
        """A chunk of input bytes, as fed."""

    def update(self, config: dict[str, Any]) -> None:
        """A ``session.update``'s effective config, at its place in the input."""

    def ended(self) -> None:
        """``session.end``: the input is complete."""

    def event(self, event: Event, origin: Literal["pipeline", "session"]) -> None:
        """An outgoing event: from the chain, or the session's own (a timeout, ``session.closed``)."""

    def engine(self, stage: Operator) -> Operator:
        """The engine stage, wrapped so what the engine produced is recorded in stream order."""

    def finish(self, reason: str) -> None:
        """The session closed: the trace is complete and goes to its store."""


class Tracing(Protocol):
    """The hub's trace recorders' factory (:class:`asrhub.trace.recorder.Tracer`)."""

    def open(self, ctx: Context) -> SessionTrace | None:
        """A recorder for the session of ``ctx`` (None: this one is not recorded)."""

    async def read(self, session_id: str, key: str | None) -> bytes | None:
        """The stored trace of ``session_id`` if the key ``key`` (a fingerprint) recorded it;
        None for a missing trace and for another key's alike."""

    async def close(self) -> None:
        """Store every finished trace, then release the store (hub shutdown)."""


class PipelineFactory(Protocol):
    """Builds one session's whole chain (decode → … → provider stage) from its context."""

    def __call__(self, ctx: Context) -> Operator: ...
