"""The signature of a callback: ``X-Asrhub-Signature: sha256=<hex HMAC-SHA256 of the body>``.

Each API key has its own secret, derived from the server's ``jobs.callback_secret`` with
HKDF-SHA256 (salt ``asrhub-jobs-callback``, info = the key's fingerprint ``key-…``, or
``anonymous`` on a hub without keys), so one key's owner cannot forge another key's callbacks and
no per-key secret has to be stored. ``python -m asrhub.jobs.signing KEY`` prints a key's secret
(with ``ASRHUB_JOBS__CALLBACK_SECRET`` set) for the operator to hand to the key's owner.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from asrhub.door.keys import fingerprint

SALT = b"asrhub-jobs-callback"
HEADER = "X-Asrhub-Signature"


def key_secret(server_secret: str, key_id: str | None) -> str:
    """The signing secret of the key whose fingerprint is ``key_id`` (hex, 64 characters)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=(key_id or "anonymous").encode())
    return hkdf.derive(server_secret.encode()).hex()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does (docs/security.md has it as a snippet without the hub installed)."""
    return hmac.compare_digest(sign(secret, body), header)


def main(argv: list[str]) -> int:
    server_secret = os.environ.get("ASRHUB_JOBS__CALLBACK_SECRET")
    if len(argv) != 1 or not server_secret:
        print("usage: ASRHUB_JOBS__CALLBACK_SECRET=… python -m asrhub.jobs.signing API_KEY", file=sys.stderr)
        return 2
    print(key_secret(server_secret, fingerprint(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
