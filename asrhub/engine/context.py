"""The vocabulary shared by operators, providers and the session: what an operator is and what
it may know about the session it serves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from reactivex import Observable

from asrhub.config import Limits, SessionConfig
from asrhub.engine.breaker import Breakers
from asrhub.flow import Pending, Slots
from asrhub.frames import Frame
from asrhub.logging import get_logger
from asrhub.metrics.hub import HubMetrics

if TYPE_CHECKING:
    from asrhub.plugin import Provider

Operator: TypeAlias = Callable[[Observable[Frame]], Observable[Frame]]
"""Every stage of a session: a function from a frame stream to a frame stream."""


@dataclass(slots=True)
class SessionContext:
    """Per-session facts handed to the pipeline factory and to a provider's stage."""

    session_id: str
    config: SessionConfig
    limits: Limits
    providers: tuple[Provider, ...]
    """The resolved failover list; empty for provider ``none``."""
    pending: Pending
    log: Any = field(default_factory=lambda: get_logger("asrhub.session"))
    transport: str = "inproc"
    extras: dict[str, Any] = field(default_factory=dict)
    decoder_slots: Slots | None = None
    """The hub's bound on compressed-audio decoder threads (None: unbounded, outside a hub)."""
    breakers: Breakers = field(default_factory=Breakers)
    """The hub's circuit breakers, one per provider, shared by every session (see
    :mod:`asrhub.engine.breaker`); a context built outside a hub gets its own."""
    metrics: HubMetrics = field(default_factory=HubMetrics)
    """The hub's metrics (see :mod:`asrhub.metrics.hub`); a context built outside a hub gets its own."""
    key: str | None = None
    """The API key identity the session counts against (None: none); shares of hub-wide
    resources (decoder threads) are per key."""


class PipelineFactory(Protocol):
    """Builds one session's whole chain (decode → … → provider stage) from its context."""

    def __call__(self, ctx: SessionContext) -> Operator: ...
