"""Socket.IO packets that survive a hostile client.

python-socketio raises from deep inside its packet parser on malformed input (invalid JSON;
deep JSON is refused here before it parses, by
:func:`~asrhub.transports.json_input.check_depth`; an event that is not ``[name, …]``, a binary
placeholder that points past the attachments, an unknown packet type) and engine.io logs each
one as an error with a traceback.
:class:`SafePacket` (passed as the server's ``serializer``) turns such a packet into one event,
:data:`MALFORMED`, whose payload says what was wrong; the Socket.io transport answers it with a
``bad_message`` error, in band, like any other bad message.

One level down, engine.io drops a client that sends an invalid engine.io frame (an unknown
packet type, an empty frame) and logs ``Unknown receive error`` with a traceback, and logs a
request for an unknown or closed session (an Engine.IO client the door timed out, say) at error
level; :func:`quiet_client_protocol_errors` makes each one line at warning level: a client's
fault, handled, not the hub's. A binary event that arrives after the hub closed the client's
namespace (audio still in flight when a session ended or was handed over) makes python-socketio
raise, and engine.io log a traceback; it becomes one line at info level: nobody's fault.
"""

from __future__ import annotations

import logging
from typing import Any

from socketio import packet

from asrhub.errors import HubError

from .json_input import check_depth

MALFORMED = "asrhub:malformed"

CLIENT_PACKETS = (
    packet.CONNECT,
    packet.DISCONNECT,
    packet.EVENT,
    packet.ACK,
    packet.BINARY_EVENT,
    packet.BINARY_ACK,
)


class SafePacket(packet.Packet):  # type: ignore[misc]
    def decode(self, encoded_packet: Any) -> int:
        try:
            if isinstance(encoded_packet, str | bytes):
                check_depth(encoded_packet)  # before the JSON parser recurses into it
            count: int = super().decode(encoded_packet)
        except HubError as exc:
            return self._malformed(exc.message)
        except (ValueError, TypeError, RecursionError) as exc:
            return self._malformed(f"undecodable packet ({type(exc).__name__}: {str(exc)[:80]})")
        if self.packet_type not in CLIENT_PACKETS:
            return self._malformed(f"packet type {self.packet_type!r} is not one a client sends")
        if self.packet_type in (packet.EVENT, packet.BINARY_EVENT) and not (
            isinstance(self.data, list) and self.data and isinstance(self.data[0], str)
        ):
            return self._malformed("an event must be a list that starts with its name")
        return count

    def add_attachment(self, attachment: Any) -> bool:
        try:
            done: bool = super().add_attachment(attachment)
        except (ValueError, IndexError, KeyError, TypeError, RecursionError) as exc:
            self.data = [MALFORMED, f"binary attachments do not match the packet ({type(exc).__name__})"]
            self.attachments: list[Any] = []
            return True
        return done

    def _malformed(self, why: str) -> int:
        self.packet_type, self.data, self.id = packet.EVENT, [MALFORMED, why], None
        return 0


LATE_BINARY = "Unexpected binary packet"
"""python-socketio raises this for a binary event whose namespace is not connected (any more)."""

EMPTY_FRAME = "Invalid empty packet received"
"""engine.io raises this out of its WebSocket handler, so aiohttp logs it as a request error."""


CLIENT_FAULT = "(further occurrences of this error will be logged with level INFO)"
"""engine.io's ``_log_error_once`` marks what it logs about one client's request (an unknown or
disconnected session, a bad transport, version or origin) with this: a client's fault, logged
at error level the first time."""


class _ClientProtocolError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "engineio.server" and isinstance(record.msg, str) and CLIENT_FAULT in record.msg:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        if record.name == "engineio.server" and isinstance(exc, ValueError) and str(exc) == LATE_BINARY:
            record.msg = "socket.io: audio after its namespace was closed (ignored)"
            record.args = ()
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
            return True
        ours = record.msg == "Unknown receive error" and record.name == "engineio.server"
        empty = isinstance(exc, ValueError) and str(exc) == EMPTY_FRAME
        ours = ours or (record.name == "aiohttp.server" and empty)
        if ours:
            record.msg = "engine.io dropped a client that sent an invalid frame (%s: %s)"
            record.args = (type(exc).__name__, str(exc)[:80])
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_protocol_errors() -> None:
    """Install the filter on engine.io's and aiohttp's server loggers (idempotent)."""
    for name in ("engineio.server", "aiohttp.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ClientProtocolError) for f in logger.filters):
            logger.addFilter(_ClientProtocolError())
