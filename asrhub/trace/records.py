"""The trace file: a bounded, append-only sequence of msgpack records (msgspec tagged structs).

Layout::

    b"ASRHUB-TRACE 1\\n"                      magic and format version
    [4-byte big-endian length][record]…       one msgpack record each, in the order they happened

Records (``kind`` tags)::

    header   session id, key fingerprint, hub version, transport, effective config, limits, the
             primary engine's name and capabilities (what shapes the pipeline)
    audio    one fed chunk of input bytes, with its byte offset and wall offset (``at``, seconds)
    update   a session.update's effective config, at its place in the input
    end      session.end: the input was completed (a session closed without it has none)
    engine   one output of engine stage ``stage`` that the engine produced (a partial, final or
             error), ``after`` the stage's first ``after`` input frames, as JSON of the event
    passed   which input frames of engine stage ``stage`` it passed straight through (1 byte each)
    event    one outgoing event as its wire JSON, its origin (``pipeline``: the chain's output;
             ``session``: the session's own decision — a timeout, the quota, ``session.closed``),
             the input byte offset and wall offset at which it left
    truncated  the trace hit ``trace.max_bytes`` or ``trace.max_seconds`` here: nothing after it
             was recorded (but ``passed`` and ``closed``)
    closed   the session's close reason
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, Literal

import msgspec

MAGIC = b"ASRHUB-TRACE 1\n"
_LENGTH = struct.Struct(">I")
MAX_RECORD = 64 << 20
"""A length above this is a damaged file, not a record."""


class TraceError(Exception):
    """A file that is not a readable trace (the message says why)."""


class _Record(msgspec.Struct, tag_field="kind", frozen=True, array_like=True):
    pass


class Header(_Record, tag="header", frozen=True):
    session_id: str
    key: str | None
    """The fingerprint of the API key the session used (None: a hub without keys)."""
    hub_version: str
    transport: str
    config: dict[str, Any]
    limits: dict[str, Any]
    provider: str | None
    """The primary engine (None: provider ``none``)."""
    capabilities: dict[str, Any] | None
    started_at: float
    """Wall clock (UNIX seconds) when the session opened: for people, never for replay."""


class Audio(_Record, tag="audio", frozen=True):
    offset: int
    at: float
    data: bytes


class Update(_Record, tag="update", frozen=True):
    config: dict[str, Any]
    at: float


class End(_Record, tag="end", frozen=True):
    at: float


class Engine(_Record, tag="engine", frozen=True):
    stage: int
    after: int
    event: bytes
    at: float


class Passed(_Record, tag="passed", frozen=True):
    stage: int
    flags: bytes


class Event(_Record, tag="event", frozen=True):
    origin: Literal["pipeline", "session"]
    offset: int
    at: float
    json: str


class Truncated(_Record, tag="truncated", frozen=True):
    reason: str
    at: float


class Closed(_Record, tag="closed", frozen=True):
    reason: str
    at: float


Record = Header | Audio | Update | End | Engine | Passed | Event | Truncated | Closed

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)


def encode(record: Record) -> bytes:
    """One record as it is appended to a trace (length prefix included)."""
    body = _encoder.encode(record)
    return _LENGTH.pack(len(body)) + body


def decode(data: bytes) -> Iterator[Record]:
    """The records of a whole trace file; raises :class:`TraceError` on anything else."""
    if not data.startswith(MAGIC):
        raise TraceError("not an ASR Hub trace (no ASRHUB-TRACE header)")
    view, pos = memoryview(data), len(MAGIC)
    while pos < len(data):
        if pos + _LENGTH.size > len(data):
            raise TraceError(f"the trace is cut short at byte {pos}")
        (size,) = _LENGTH.unpack_from(view, pos)
        pos += _LENGTH.size
        if size > MAX_RECORD or pos + size > len(data):
            raise TraceError(f"the trace is cut short or damaged at byte {pos}")
        try:
            yield _decoder.decode(view[pos : pos + size])
        except msgspec.DecodeError as exc:
            raise TraceError(f"damaged record at byte {pos}: {exc}") from None
        pos += size


def header_of(data: bytes) -> Header:
    """The header (the first record) of a trace."""
    for record in decode(data):
        if isinstance(record, Header):
            return record
        break
    raise TraceError("the trace has no header")
