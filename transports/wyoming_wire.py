"""Wyoming's framing, read from a client that may be hostile.

An event is a JSON header line (``{"type": …, "data": {…}, "data_length": N,
"payload_length": M}``), then ``N`` bytes of JSON data merged into ``data``, then ``M`` bytes of
payload (audio). :func:`read_event` reads one like :func:`wyoming.event.async_read_event`, with
every bound and type checked before anything is read or used: the header line and the data at
most :data:`MAX_DATA_BYTES` each (the contract's 64 KiB for a JSON message), the payload at most
``max_payload`` (``limits.max_frame_bytes``), lengths non-negative integers, header and data JSON
objects no deeper than :data:`~asrhub.transports.json_input.MAX_DEPTH`, ``type`` a string. A
violation raises :class:`~asrhub.errors.HubError` (``too_large`` / ``bad_message``) — the
handler answers with an ``error`` event and closes, since the stream's framing can no longer be
trusted — instead of the library's ``TypeError`` / ``AttributeError`` / ``RecursionError``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wyoming.event import Event

from asrhub.errors import HubError

from .json_input import MAX_BYTES, load_object

MAX_DATA_BYTES = MAX_BYTES
"""Largest header line and largest data block (JSON)."""
READ_LIMIT = MAX_DATA_BYTES + 1
"""The connection reader's line limit: a longer header line is refused without being kept."""


def _length(header: dict[str, Any], field: str) -> int:
    value = header.get(field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HubError("bad_message", f"{field} must be a non-negative integer, not {value!r}"[:200])
    return value


async def read_event(reader: asyncio.StreamReader, *, max_payload: int) -> Event | None:
    """The next event; None at the end of the stream. Raises :class:`HubError`."""
    try:
        line = await reader.readline()
    except ValueError:  # asyncio's LimitOverrunError: the line outgrew READ_LIMIT
        raise HubError("too_large", f"an event header over {MAX_DATA_BYTES} bytes") from None
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise asyncio.IncompleteReadError(line, None)  # the peer hung up mid-line
    header = load_object(line, max_bytes=MAX_DATA_BYTES, what="the event header")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise HubError("bad_message", "an event header needs a string 'type'")
    data = header.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise HubError("bad_message", f"an event's 'data' must be an object, not {type(data).__name__}")
    data_length = _length(header, "data_length")
    payload_length = _length(header, "payload_length")
    if data_length > MAX_DATA_BYTES:
        raise HubError(
            "too_large", f"event data of {data_length} bytes exceeds the limit of {MAX_DATA_BYTES}"
        )
    if payload_length > max_payload:
        raise HubError(
            "too_large", f"an event payload of {payload_length} bytes exceeds the limit of {max_payload}"
        )
    if data_length:
        data = {**data, **load_object(await reader.readexactly(data_length), what="the event data")}
    payload = await reader.readexactly(payload_length) if payload_length else None
    return Event(type=kind, data=data, payload=payload)
