"""The plug-in contract: what an engine offers the hub, and what an operator or an engine may
know about the session it serves. The bottom room of the core: it names nothing above it.

A provider is loaded once per process and shared by every session. It offers:

* ``transcribe`` — batch: one 16 kHz mono float32 array (a segment or a whole file) in, one
  :class:`Transcription` out. Every provider has it; failover and ``/v1/transcribe`` use it.
* ``stage`` — the last operator of a session's chain, built per session from the shared engine:
  it turns :class:`~asrhub.frames.Segment` frames (batch engines) or
  :class:`~asrhub.frames.AudioChunk` frames (streaming engines) into transcript events. It gets
  the session's :class:`SessionContext` — a Protocol: the hub builds the concrete context (in
  :mod:`asrhub.session.context`) and passes it in.

Optional parts, each a Protocol of its own so a third party implements only what it has:
:class:`Probed` (a cheap health check for the circuit breaker). Providers are found through
:mod:`asrhub.engine.registry` (the ``asrhub.providers`` entry-point group); the core never
imports a concrete engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from reactivex import Observable

from asrhub.config import Limits, SessionConfig
from asrhub.flow import Pending
from asrhub.frames import Frame, Samples, Word

Operator: TypeAlias = Callable[[Observable[Frame]], Observable[Frame]]
"""Every stage of a session: a function from a frame stream to a frame stream."""


class Priority(IntEnum):
    """How urgently a ``transcribe`` call is wanted; the engine serves lower values first. The
    one priority scale of the hub: every queue (the engine subject, the worker pools) orders by it.

    Finals (a user waits for them) before uploads (file/batch jobs) before partials (which are
    shed first when the engine is busy). Remote providers may ignore it.
    """

    FINAL = 0
    UPLOAD = 1
    PARTIAL = 2


class ProviderError(Exception):
    """An engine failed on one request. Becomes ``provider_failed`` (or triggers failover)."""

    code = "provider_failed"


class ProviderUnavailable(Exception):
    """An engine cannot be used at all (not installed, no model, no credentials)."""


class PoolFull(RuntimeError):
    """An engine's queue is at its bound. Backpressure, not a failure: failover waits it out
    within the call's timeout (the session's ``feed`` waits meanwhile), an upload answers
    ``capacity``."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    streaming: bool = False
    """True: consumes audio chunks as they come (Vosk). False: consumes whole utterances."""
    partials: bool = True
    word_timestamps: bool = False
    languages: tuple[str, ...] | None = None
    """Languages it can transcribe; None when it takes any language name."""
    models: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    """Models a session may pick with ``"model"``, each with its languages (None: any); the
    first is the default. Empty: the provider offers no choice of model."""
    translate: bool = False
    """Honours ``task="translate"`` (speech in another language → English text)."""
    keyterms: bool = False
    """Uses ``keyterms`` (recognition biased toward them)."""

    @property
    def default_model(self) -> str | None:
        """The model a session that names none gets (None: no choice of model)."""
        return next(iter(self.models), None)

    def languages_of(self, model: str | None = None) -> tuple[str, ...] | None:
        """The languages ``model`` (None: the default model) transcribes; None: any."""
        model = model or self.default_model
        return self.models.get(model, self.languages) if model is not None else self.languages

    def model_for(self, language: str) -> str | None:
        """The model that serves ``language`` when a request names none: None (the default)
        when the default model knows it, else the first model that does (``de`` with whisper:
        ``base``, not the English-only ``tiny.en``); None when no model knows it (the hub
        refuses the language with its own message)."""
        default = self.default_model
        if default is None or self.knows(default, language):
            return None
        return next((m for m in self.models if self.knows(m, language)), None)

    def knows(self, model: str | None, language: str) -> bool:
        languages = self.languages_of(model)
        return languages is None or language in languages


@dataclass(frozen=True, slots=True)
class TimedText:
    text: str
    start: float
    end: float
    avg_logprob: float | None = None
    """The engine's mean token log-probability for this piece (None: the engine gives none)."""
    no_speech_prob: float | None = None
    """The engine's probability that this piece is not speech (None: not known)."""
    compression_ratio: float | None = None
    """gzip compression ratio of the text (a repetition-loop signal; None: not known)."""
    speaker: int | None = None
    """Who spoke this piece (diarization; None: not asked for)."""

    def shifted(self, offset: float) -> TimedText:
        """This piece ``offset`` seconds later, times rounded to the millisecond (as
        :meth:`asrhub.frames.Word.shifted`)."""
        return replace(self, start=round(self.start + offset, 3), end=round(self.end + offset, 3))


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    language: str | None = None
    words: tuple[Word, ...] | None = None
    segments: tuple[TimedText, ...] = field(default_factory=tuple)
    """Sub-utterance pieces with times relative to the audio's start (for file transcription)."""
    duration: float = 0.0
    language_probability: float | None = None
    """How sure the engine is of ``language`` when it identified it (None: given, or unknown)."""


def hint_prompt(prompt: str | None, keyterms: Any = ()) -> str | None:
    """The session's ``prompt`` with its ``keyterms`` appended (``"…, Vortalix, Nakashima"``):
    how engines that take one free-text hint (OpenAI's ``prompt``, FunASR hot words, Google
    phrase hints) receive key terms."""
    terms = ", ".join(t for t in keyterms or () if t)
    if not terms:
        return prompt
    return f"{prompt.rstrip()} {terms}" if prompt else terms


# --------------------------------------------------------------------------- the session, as a stage sees it

BreakerState = Literal["closed", "degraded", "open"]


class CircuitBreaker(Protocol):
    """One provider's health as every session of the hub sees it (:mod:`asrhub.engine.breaker`)."""

    @property
    def state(self) -> BreakerState: ...

    @property
    def usable(self) -> bool:
        """False while the circuit is open: the provider is skipped."""

    def why_open(self) -> str: ...

    def failed(self, reason: str) -> None: ...

    def succeeded(self) -> None: ...


class CircuitBreakers(Protocol):
    """The hub's breakers, one per provider, shared by every session."""

    def of(self, provider: Provider) -> CircuitBreaker: ...

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """The failover order: closed providers first, then degraded ones, then open ones."""


@dataclass(slots=True)
class EarlyFinals:
    """A session's early-final decodes (see :mod:`asrhub.engine.batch_stage`): started at a
    pause, used as the utterance's final, dropped because speech went on."""

    started: int = 0
    used: int = 0
    dropped: int = 0
    latest: Any = None
    """The latest speculative decode: ``(end of its audio in stream seconds, an asyncio future
    of its text — None when it failed or was dropped)``; the semantic end of turn reads it
    (``operators/_turn_end.py``)."""


class SessionContext(Protocol):
    """What an operator or an engine stage may know about the session it serves. The hub builds
    the concrete context (:class:`asrhub.session.context.Context`) and passes it in."""

    @property
    def session_id(self) -> str: ...

    @property
    def config(self) -> SessionConfig:
        """The config the session started with. A live update (``session.update``) never
        changes it: it reaches each stage as a :class:`~asrhub.frames.SessionUpdated` frame,
        in stream order, and a stage takes the new config from that frame as it passes."""

    @property
    def limits(self) -> Limits: ...

    @property
    def providers(self) -> tuple[Provider, ...]:
        """The resolved failover list; empty for provider ``none``."""

    @property
    def pending(self) -> Pending:
        """The session's backpressure count (:mod:`asrhub.flow`)."""

    @property
    def log(self) -> Any:
        """A structlog logger bound to the session's id, provider and transport."""

    @property
    def transport(self) -> str: ...

    @property
    def breakers(self) -> CircuitBreakers: ...

    @property
    def early_finals(self) -> EarlyFinals: ...

    @property
    def span(self) -> Any:
        """The session's trace span (:mod:`asrhub.telemetry`); None while tracing is off."""

    @property
    def stats(self) -> CallStats | None:
        """The hub's live engine figures, fed by every failover call (None: outside a hub)."""


class CallStats(Protocol):
    """The live figures of the engines (time per audio second, calls in flight), fed by the one
    failover loop around each engine call (:mod:`asrhub.routing.stats` is the hub's)."""

    def timing(self, provider: str, audio_s: float) -> AbstractContextManager[None]:
        """Around one call of ``provider`` on ``audio_s`` seconds of audio: counts it in flight
        while it runs and, when it answers, its time per audio second."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where one utterance goes (``provider: "auto"``): the ordered candidates handed to the
    failover loop, the machine-readable reason every final carries as ``route``, and decode
    options the route fixes (the identified ``language``)."""

    providers: tuple[Provider, ...]
    reason: Mapping[str, Any]
    options: Mapping[str, Any] = field(default_factory=dict)


class UtteranceRouter(Protocol):
    """A session's router (:mod:`asrhub.routing`): picks the engines of each utterance."""

    async def route(self, samples: Samples, config: SessionConfig) -> Route:
        """The route of an utterance of ``samples`` under the session's ``config`` (its
        language hint, if any). Never raises for an engine's fault: a failed language
        identification routes as "language unknown"."""

    def partial(self, samples: Samples, **options: Any) -> Any:
        """Start a partial decode of an in-progress utterance on the engine of the session's
        latest route (an ``asyncio.Task`` of a :class:`Transcription`; with a language hint,
        the first utterance is routed at its first partial), or None: no route yet,
        that engine makes no partial decodes, its circuit is not closed, or its pool is busy."""


# --------------------------------------------------------------------------- the provider


@runtime_checkable
class Provider(Protocol):
    name: str
    capabilities: Capabilities

    async def start(self) -> None:
        """Load models / open clients. Called once, before the hub accepts sessions."""

    async def close(self) -> None:
        """Release everything ``start`` acquired."""

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 audio. Raises :class:`ProviderError` on failure
        (:class:`PoolFull` when its queue is at its bound).

        ``priority`` orders queued calls on a shared engine (finals first, partials shed first).
        ``options`` (from :meth:`asrhub.config.SessionConfig.decode_options`, each present only
        when the session set it): ``model``, ``task``, ``keyterms``, ``languages`` (restrict
        language identification). A provider uses those its capabilities declare and ignores
        the rest (the hub refuses, at session start, what a provider cannot do).
        """

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        """The per-session operator ending the chain; ``fallbacks`` serve utterances it fails."""

    def describe(self) -> dict[str, Any]:
        """Name, capabilities, model, for ``/v1/models`` and ``asrhub providers``."""


@runtime_checkable
class Probed(Protocol):
    """A provider with a cheap health check: the circuit breaker probes an open circuit with
    it (a provider without one is probed with half a second of silence)."""

    async def probe(self) -> None:
        """Return when the engine answers; raise when it does not."""
