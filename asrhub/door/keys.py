"""API keys: who is calling, from the key a protocol carried (every protocol the same way).

A key is compared against every configured key in constant time (no early exit, so the time
taken says nothing about how much of a key was right). The caller's identity is a fingerprint
of the key it matched: per-key limits and ownership (an HTTP session, a gRPC operation) count
against it, and logs can name it without holding the secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from asrhub.errors import HubError

MISSING = "an API key is required (docs/security.md says where each protocol carries it)"
WRONG = "the API key is not valid"


def fingerprint(key: str) -> str:
    """The identity of a key: stable, short, and not the key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def split_keys(values: Iterable[str]) -> tuple[str, ...]:
    """Comma-separated key lists (``ASRHUB_API_KEYS=k1,k2``) as single keys, blanks dropped."""
    return tuple(k.strip() for v in values for k in v.split(",") if k.strip())


@dataclass(frozen=True)
class Keys:
    keys: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        """With no key configured every caller is admitted (and has no identity)."""
        return bool(self.keys)

    def identify(self, presented: str | None) -> str | None:
        """The identity of a valid key; None when no key is configured.

        Raises a fatal ``unauthorized`` :class:`HubError` for a missing or wrong key."""
        if not self.keys:
            return None
        if not presented:
            raise HubError("unauthorized", MISSING, fatal=True)
        given = presented.encode()
        found = None
        for key in self.keys:  # every key, every time: no timing hint
            if hmac.compare_digest(key.encode(), given):
                found = key
        if found is None:
            raise HubError("unauthorized", WRONG, fatal=True)
        return fingerprint(found)
