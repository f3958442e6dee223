"""The provider protocol: what every ASR engine offers the hub.

A provider is loaded once per process and shared by every session. It offers:

* ``transcribe`` — batch: one 16 kHz mono float32 array (a segment or a whole file) in, one
  :class:`Transcription` out. Every provider has it; failover and ``/v1/transcribe`` use it.
* ``stage`` — the last operator of a session's chain, built per session from the shared engine:
  it turns :class:`~asrhub.frames.Segment` frames (batch engines) or
  :class:`~asrhub.frames.AudioChunk` frames (streaming engines) into transcript events.

Providers are found through :mod:`asrhub.engine.registry` (the ``asrhub.providers`` entry-point group);
the core never imports a concrete engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from asrhub.frames import Samples, Word

if TYPE_CHECKING:
    from asrhub.engine.context import Operator, SessionContext


class Priority(IntEnum):
    """How urgently a ``transcribe`` call is wanted; the engine serves lower values first.

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
        """Transcribe 16 kHz mono float32 audio. Raises :class:`ProviderError` on failure.

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
