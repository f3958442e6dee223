"""JSON from a client, at the edge of every JSON-speaking protocol: size, depth, syntax.

Python's ``json`` and msgspec both recurse per nesting level and raise ``RecursionError`` on
10,000-deep input, an exception no handler expects (``ValueError`` is what bad JSON raises). So
every transport that reads client JSON first asks :func:`check_depth`, which scans without
recursing (one regular expression over the text: strings are skipped, brackets counted) and
refuses anything nested deeper than :data:`MAX_DEPTH` with ``bad_message``; :func:`load` adds
the size bound and the parse, so a caller gets either a value or a ``bad_message`` /
``too_large`` :class:`~asrhub.errors.HubError` — never another exception, never a traceback.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from asrhub.errors import HubError

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted (the contract's messages need 4)."""
MAX_BYTES = 64 * 1024
"""Largest JSON message (the contract's control messages; the same on every protocol)."""

_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS_ONLY = bytes.maketrans(b"{}", b"[]")
_KEEP = bytes(range(256)).translate(None, b"[]{}")


def check_depth(raw: str | bytes, limit: int = MAX_DEPTH) -> None:
    """Raise ``bad_message`` if ``raw`` nests arrays/objects deeper than ``limit`` (or has
    unpaired brackets, which is not JSON either).

    Linear passes in C, no recursion: strings are cut out, only the brackets kept (as one kind),
    then each pass removes the innermost pairs; whatever is left after ``limit`` passes is too
    deep. (Mismatched kinds, ``[}``, pass here and are the parser's to refuse.)"""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return  # cannot be deeper
    skeleton = _STRINGS.sub(b"", data).translate(_BRACKETS_ONLY, _KEEP)
    for _ in range(limit):
        shorter = skeleton.replace(b"[]", b"")
        if len(shorter) == len(skeleton):
            break
        skeleton = shorter
    if skeleton:
        raise HubError("bad_message", f"JSON nested deeper than {limit} levels (or unbalanced)")


def load(raw: str | bytes, *, max_bytes: int = MAX_BYTES, what: str = "message") -> Any:
    """Parse one JSON value from a client (raises ``too_large`` / ``bad_message``)."""
    size = len(raw)
    if size > max_bytes:
        raise HubError("too_large", f"{what} of {size} bytes exceeds the limit of {max_bytes}")
    check_depth(raw)
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
        raise HubError("bad_message", f"{what} is not valid JSON: {exc}") from None


def load_object(raw: str | bytes, *, max_bytes: int = MAX_BYTES, what: str = "message") -> dict[str, Any]:
    """:func:`load`, and the value must be an object."""
    value = load(raw, max_bytes=max_bytes, what=what)
    if not isinstance(value, dict):
        raise HubError("bad_message", f"{what} must be a JSON object, not {type(value).__name__}")
    return value
