"""The closed set of immutable frames that flow through a session's stream.

Two families travel on one ordered stream:

* internal frames that never leave the hub: :class:`RawAudio` (bytes as the client sent them),
  :class:`AudioChunk` (decoded mono float32 samples) and :class:`Segment` (one utterance's audio
  for a batch engine);
* wire events (:class:`Event` subclasses), each with the ``type`` string of the wire contract and
  a JSON round-trip through :meth:`Event.to_dict` / :func:`event_from_dict`.

Every frame is a frozen, slotted dataclass: several subscribers share one instance, so nothing may
mutate it. Sample arrays are made read-only for the same reason. Times are *stream* seconds,
derived from the number of samples received, never from a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeAlias

import msgspec
import numpy as np
import numpy.typing as npt

from asrhub.config import SessionConfig

Samples: TypeAlias = npt.NDArray[np.float32]

TARGET_RATE = 16_000
"""The rate every operator after ``resample`` works at."""


def _freeze(array: Samples) -> Samples:
    if array.flags.writeable:
        array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True)
class RawAudio:
    """Audio bytes exactly as a client sent them, before ``decode``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """Mono float32 samples in [-1, 1] at ``sample_rate``.

    ``start`` is the stream time of the first sample; ``seq`` counts chunks from 0.
    """

    samples: Samples
    sample_rate: int
    start: float
    seq: int

    def __post_init__(self) -> None:
        _freeze(self.samples)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class Segment:
    """One utterance's audio, ready for a batch engine.

    ``final`` is False for an in-progress snapshot of a growing utterance (the provider may
    decode it for a partial result, or shed it under load); True for the whole utterance, which
    must produce exactly one ``transcript.final`` or one ``error``.
    """

    segment_id: int
    samples: Samples
    sample_rate: int
    start: float
    end: float
    final: bool = True
    speculative: bool = False
    """With ``final=False``: the audio up to a pause the VAD just heard (:class:`SpeechPaused`);
    the engine stage may start the final decode on it early (an *early final*)."""
    voiced_end: float | None = None
    """With ``final=True``, for an utterance closed by ``vad.speech_ended``: the end of its last
    voiced frame. A speculative decode whose ``end`` reaches it covered all the speech."""

    def __post_init__(self) -> None:
        _freeze(self.samples)


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """Internal hint from ``vad_gate`` (never sent to clients): inside an utterance, the VAD has
    heard a short silence after the last voiced frame, which ended at ``t``. The utterance may
    still go on (the hangover decides); ``segment`` turns the hint into a speculative Segment."""

    t: float


# --------------------------------------------------------------------------- wire events


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every hub → client message. ``type`` is the contract's name for it."""

    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for f in fields(self):
            value = getattr(self, f.name)
            if (value is None and f.metadata.get("omit_none")) or f.metadata.get("internal"):
                continue
            if isinstance(value, tuple):
                value = [w.to_dict() if isinstance(w, Word) else w for w in value]
            out[f.name] = value
        return out


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float
    probability: float
    speaker: int | None = None
    """Extension (diarization, issue 26): who said it, 0, 1, … stable for the file or session."""
    speaker_confidence: float | None = None
    """How sure ``speaker`` is, 0–1 (file diarization; Deepgram's ``speaker_confidence``)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "word": self.word,
            "start": self.start,
            "end": self.end,
            "probability": self.probability,
        }
        if self.speaker is not None:
            out["speaker"] = self.speaker
        return out

    def shifted(self, offset: float) -> Word:
        """This word ``offset`` seconds later (an engine's times, relative to the audio it was
        given, → stream or file time), times rounded to the millisecond."""
        return Word(
            self.word,
            round(self.start + offset, 3),
            round(self.end + offset, 3),
            self.probability,
            self.speaker,
            self.speaker_confidence,
        )

    def mapped(self, clock: Callable[[float], float]) -> Word:
        """This word with its times mapped through ``clock`` (a recognizer's clock → stream time
        where audio was skipped), rounded to the millisecond."""
        return Word(
            self.word,
            round(clock(self.start), 3),
            round(clock(self.end), 3),
            self.probability,
            self.speaker,
            self.speaker_confidence,
        )


@dataclass(frozen=True, slots=True)
class SessionStarted(Event):
    type: ClassVar[str] = "session.started"
    session_id: str
    config: dict[str, Any]
    resume_token: str | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True, slots=True)
class SessionResumed(Event):
    """Extension: answers ``session.resume``. ``replayed`` events follow it at once (the finals
    and per-utterance errors above ``last_segment_id``); ``complete`` is False when some were
    already evicted from the session's bounded log; ``bytes_received`` counts the audio bytes
    the session took so far; ``resume_from_bytes`` is the offset in the client's audio byte
    stream from which it must re-send (``bytes_received`` when the session kept running; the end
    of its last final when it was rebuilt on another node from the cluster log)."""

    type: ClassVar[str] = "session.resumed"
    session_id: str
    resume_token: str
    config: dict[str, Any]
    replayed: int
    complete: bool
    bytes_received: int
    last_segment_id: int | None = None
    resume_from_bytes: int = 0


@dataclass(frozen=True, slots=True)
class SessionHandover(Event):
    """Extension: the hub is draining (SIGTERM: a rolling restart) and hands this resumable
    session over. Sent by the connection, never through the session's stream (so it is not in
    the resume log): what was queued before it has been delivered, the connection closes next
    (WebSocket 1012), and the session — its utterance in flight not finalized — waits for a
    ``session.resume`` with ``resume_token`` on any other node. ``last_segment_id`` is the last
    utterance the hub logged (None: none yet); ``resume_from_bytes`` the offset in the client's
    audio byte stream just after that utterance's final: the audio from there on is to be sent
    again (the new node's ``session.resumed`` has the final word)."""

    type: ClassVar[str] = "session.handover"
    session_id: str
    resume_token: str
    last_segment_id: int | None
    resume_from_bytes: int


@dataclass(frozen=True, slots=True)
class SessionUpdated(Event):
    """Extension: answers ``session.update`` with the effective config.

    It travels the session's stream in order with the audio: each stage that reads the config
    (VAD, segmenter, engine stage) takes ``settings`` from it as it passes, so the change holds
    from the next utterance on. ``settings`` (the parsed
    :class:`~asrhub.config.SessionConfig`) stays inside the hub; the wire carries ``config``."""

    type: ClassVar[str] = "session.updated"
    config: dict[str, Any]
    settings: SessionConfig | None = field(default=None, compare=False, metadata={"internal": True})


@dataclass(frozen=True, slots=True)
class SpeechStarted(Event):
    type: ClassVar[str] = "vad.speech_started"
    t: float
    channel: int | None = field(default=None, metadata={"omit_none": True})
    """Extension: with ``multichannel``, the audio channel (0-based) this event comes from."""


@dataclass(frozen=True, slots=True)
class SpeechEnded(Event):
    type: ClassVar[str] = "vad.speech_ended"
    t: float
    channel: int | None = field(default=None, metadata={"omit_none": True})
    """Extension: with ``multichannel``, the audio channel (0-based) this event comes from."""


@dataclass(frozen=True, slots=True)
class WakeWordDetected(Event):
    type: ClassVar[str] = "wakeword.detected"
    name: str
    score: float
    t: float


@dataclass(frozen=True, slots=True)
class PartialTranscript(Event):
    type: ClassVar[str] = "transcript.partial"
    segment_id: int
    text: str
    start: float
    end: float
    stable: str | None = field(default=None, metadata={"omit_none": True})
    """Extension: the first words of ``text`` that will not change in this utterance's later
    partials (two decodes agreed on them: :mod:`asrhub.engine.local_agreement`); ``text`` is
    always ``stable`` plus the tail that may still change. Absent where the engine's partials
    have no stable part (streaming engines, ``limits.stable_partials = false``)."""
    channel: int | None = field(default=None, metadata={"omit_none": True})
    """Extension: with ``multichannel``, the audio channel (0-based) this event comes from."""


@dataclass(frozen=True, slots=True)
class FinalTranscript(Event):
    type: ClassVar[str] = "transcript.final"
    segment_id: int
    text: str
    start: float
    end: float
    provider: str
    language: str | None = None
    words: tuple[Word, ...] | None = field(default=None, metadata={"omit_none": True})
    language_probability: float | None = field(default=None, metadata={"omit_none": True})
    """Extension: present when the engine identified ``language`` (how sure it is, 0–1)."""
    speaker: int | None = field(default=None, metadata={"omit_none": True})
    """Extension (config ``diarize``): who spoke this final (most of its words)."""
    channel: int | None = field(default=None, metadata={"omit_none": True})
    """Extension: with ``multichannel``, the audio channel (0-based) this event comes from."""
    route: dict[str, Any] | None = field(default=None, hash=False, metadata={"omit_none": True})
    """Extension (``provider: "auto"``): why ``provider`` served it — ``reason`` (``language``,
    ``health``, ``load``, ``policy``, ``default``), ``language`` and where it came from, the
    ordered ``candidates`` (docs/routing.md)."""


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    """A contract ``error``. ``fatal`` errors end the session; others leave it running.

    ``segment_id`` (an extension of the contract) names the utterance an error replaced, so a
    client can count exactly one final-or-error per utterance.
    """

    type: ClassVar[str] = "error"
    code: str
    message: str
    fatal: bool = False
    segment_id: int | None = field(default=None, metadata={"omit_none": True})
    channel: int | None = field(default=None, metadata={"omit_none": True})
    """Extension: with ``multichannel``, the audio channel (0-based) this event comes from."""


@dataclass(frozen=True, slots=True)
class Pong(Event):
    type: ClassVar[str] = "pong"
    id: Any = None


@dataclass(frozen=True, slots=True)
class SessionClosed(Event):
    type: ClassVar[str] = "session.closed"
    reason: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.type: cls
    for cls in (
        SessionStarted,
        SessionResumed,
        SessionHandover,
        SessionUpdated,
        SpeechStarted,
        SpeechEnded,
        WakeWordDetected,
        PartialTranscript,
        FinalTranscript,
        ErrorEvent,
        Pong,
        SessionClosed,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its wire form (the inverse of :meth:`Event.to_dict`), validated:
    a missing or mistyped field raises :class:`msgspec.ValidationError`, an unknown ``type``
    :class:`KeyError`."""
    event: Event = msgspec.convert(data, EVENT_TYPES[data["type"]])
    return event


def segment_of(event: Event) -> int | None:
    """The utterance ``event`` answers: a final's ``segment_id``, or that of an error that
    replaced one; None for every other event."""
    if isinstance(event, FinalTranscript | ErrorEvent):
        return event.segment_id
    return None


Frame: TypeAlias = RawAudio | AudioChunk | Segment | SpeechPaused | Event
"""Anything that travels on a session's stream."""
