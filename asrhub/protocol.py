"""The wire contract's parsing and encoding, shared by every transport.

No transport parses a client message or encodes a hub event on its own: they all call
:func:`parse_message` and :func:`encode_event`, so the contract has one implementation.

Client → hub messages are JSON objects with a string ``type``::

    {"type": "session.start", "config": {...}}     → StartMessage
    {"type": "session.end"}                        → EndMessage
    {"type": "ping", "id": 7}                      → PingMessage
    {"type": "session.resume", "token": "…",       → ResumeMessage   (extension, asrhub.session.resume)
     "last_segment_id": 3}
    {"type": "session.update", "config": {...}}    → UpdateMessage   (extension: live reconfiguration)

Each message is a msgspec struct tagged by its ``type``: one ``msgspec.convert`` decodes and
validates it (field types, bounds). Wrapped formats (``{"action": …}``, ``{"data": …}``),
unknown types, non-objects, invalid JSON, JSON nested too deeply and fields of the wrong type
raise :class:`~asrhub.errors.HubError` ``bad_message`` (not fatal: the session lives) — never
another exception. The ``config`` object itself is validated by :meth:`asrhub.hub.Hub.open`.

Over HTTP, a refusal's status and body come from the door (``transports/door.py``: one status
table, each protocol's own error shape registered by its transport).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeAlias

import msgspec
import numpy as np
from msgspec import Meta

from asrhub.errors import HubError
from asrhub.frames import Event

MAX_MESSAGE_BYTES = 64 * 1024
"""Largest JSON control message; larger ones are answered with ``too_large``."""

WRAPPER_KEYS = ("action", "data", "payload", "event")
"""Top-level keys of the wrapped formats the contract rejects."""

MAX_TOKEN_CHARS = 256


class _Message(msgspec.Struct, tag_field="type", frozen=True, forbid_unknown_fields=False):
    """A client → hub message; ``type`` is its tag (unknown extra fields are ignored)."""


class StartMessage(_Message, tag="session.start", frozen=True):
    type: ClassVar[str] = "session.start"
    config: dict[str, Any] | None = None
    resume: bool = False
    """Extension: ``"resume": true`` asks for a resume token (see :mod:`asrhub.session.resume`)."""


class EndMessage(_Message, tag="session.end", frozen=True):
    type: ClassVar[str] = "session.end"


class PingMessage(_Message, tag="ping", frozen=True):
    type: ClassVar[str] = "ping"
    id: Any = None


class ResumeMessage(_Message, tag="session.resume", frozen=True):
    """Extension: continue a dropped session (see :mod:`asrhub.session.resume`)."""

    type: ClassVar[str] = "session.resume"
    token: Annotated[str, Meta(min_length=1, max_length=MAX_TOKEN_CHARS)]
    """The ``resume_token`` of ``session.started``."""
    last_segment_id: int | None = None
    audio_from_bytes: Annotated[int, Meta(ge=0)] = 0
    """Extension (cluster resume): the oldest offset of its audio byte stream the client can
    still re-send; ``session.resumed``'s ``resume_from_bytes`` is never below it."""


class UpdateMessage(_Message, tag="session.update", frozen=True):
    """Extension: change an open session's config from the next utterance on (a patch: only the
    fields given change; nested objects merge). Answered by ``session.updated``."""

    type: ClassVar[str] = "session.update"
    config: dict[str, Any]
    """The fields to change."""


ClientMessage: TypeAlias = StartMessage | EndMessage | PingMessage | ResumeMessage | UpdateMessage

CLIENT_TYPES = (StartMessage.type, EndMessage.type, PingMessage.type, ResumeMessage.type, UpdateMessage.type)

_decoder = msgspec.json.Decoder()


def parse_message(raw: str | bytes | Any, *, event: str | None = None) -> ClientMessage:
    """Parse one client → hub control message; raises only :class:`HubError` (``bad_message``,
    or ``too_large`` past :data:`MAX_MESSAGE_BYTES`).

    ``raw`` is JSON text (WebSocket text frame, HTTP body) or an already decoded object
    (a Socket.io payload). ``event`` is the Socket.io event name the payload arrived under:
    when given, a payload without ``type`` takes it from the event name, and a ``type`` that
    differs from it is refused.
    """
    if isinstance(raw, str | bytes | bytearray | memoryview):
        if len(raw) > MAX_MESSAGE_BYTES:
            raise HubError("too_large", f"control message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            obj = _decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise HubError("bad_message", f"not valid JSON: {exc}") from None
        except RecursionError:  # ~1000 nested arrays fit in a small message
            raise HubError("bad_message", "JSON nested too deeply") from None
    else:
        obj = raw
    if event is not None and obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise HubError("bad_message", f"a message must be a JSON object, not {type(obj).__name__}")
    kind = obj.get("type", event if event is not None else None)
    wrapper = next((k for k in WRAPPER_KEYS if k in obj), None)
    if kind is None:
        if wrapper is not None:
            raise HubError(
                "bad_message",
                f"wrapped messages ({{{wrapper!r}: …}}) are not supported; send a flat object "
                'with a "type", e.g. {"type": "session.start", "config": {…}}',
            )
        raise HubError("bad_message", 'a message needs a string "type" field')
    if not isinstance(kind, str):
        raise HubError("bad_message", f'"type" must be a string, not {type(kind).__name__}')
    if event is not None and kind != event:
        raise HubError("bad_message", f"event {event!r} carries a message of type {kind!r}")
    if wrapper is not None:
        raise HubError(
            "bad_message",
            f"wrapped messages are not supported: put the fields of {wrapper!r} at the top level",
        )
    if kind == "audio":
        raise HubError("bad_message", "audio travels as binary frames, never inside JSON")
    if kind not in CLIENT_TYPES:
        raise HubError(
            "bad_message", f"unknown message type {kind!r}; expected one of {', '.join(CLIENT_TYPES)}"
        )
    try:
        message: ClientMessage = msgspec.convert({**obj, "type": kind}, ClientMessage)
    except msgspec.ValidationError as exc:
        raise HubError("bad_message", f"invalid {kind}: {exc}") from None
    except RecursionError:
        raise HubError("bad_message", "JSON nested too deeply") from None
    return message


# --------------------------------------------------------------------------- hub → client


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    # TypeError, as msgspec's own encoders say it (NotImplementedError is a RuntimeError, which
    # the transports read as "the socket went away" and would swallow)
    raise TypeError(f"cannot encode {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)


def encode_json(obj: Any) -> bytes:
    """JSON bytes of a plain object (numpy scalars allowed)."""
    return _encoder.encode(obj)


def encode_event(event: Event) -> str:
    """One hub → client message as JSON text (the WebSocket text frame, the SSE ``data``)."""
    return _encoder.encode(event.to_dict()).decode()


def event_payload(event: Event) -> dict[str, Any]:
    """The message as a JSON-ready dict (the Socket.io payload): numpy scalars and arrays
    converted to Python numbers and lists, without a round trip through JSON text."""
    result: dict[str, Any] = msgspec.to_builtins(event.to_dict(), enc_hook=_enc_hook)
    return result


def sse_frame(event: Event) -> bytes:
    """One Server-Sent Events frame: ``event: <type>`` / ``data: <json>``."""
    return b"event: " + event.type.encode() + b"\ndata: " + _encoder.encode(event.to_dict()) + b"\n\n"
