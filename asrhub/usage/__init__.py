"""Usage metering and quotas per API key: audio seconds, sessions and requests, per UTC day.

Who is counted: the caller's identity, the fingerprint of its key (:func:`asrhub.door.keys
.fingerprint`), or ``anonymous`` on a hub without keys. What is counted:

* **audio seconds** — decoded stream time a session fed to its pipeline (counted after decoding,
  by a :class:`SessionMeter` stage: one float addition per chunk, credited to the meter once a
  second of audio), and the decoded length of each upload job once transcribed;
* **sessions** — every session the hub opened (every protocol);
* **requests** — HTTP requests to ``/v1/…`` (``GET /v1/usage`` excepted), gRPC Speech and
  Operations calls, Wyoming sessions.

Where: in this process (:class:`UsageMeter`), and with a cluster also in Redis, so every node
shares one count (:mod:`asrhub.cluster.usage`: one pipeline a second per node, whatever its
number of sessions). Quotas: ``limits.key_audio_seconds_per_day`` and
``limits.max_sessions_per_key``, each overridable per key (``limits.per_key``).
"""

from __future__ import annotations

from .caller import CALLER
from .counts import ANONYMOUS, Counts, UsageStore
from .meter import QUOTA_EXCEEDED, UsageMeter
from .period import Period
from .session_meter import SessionMeter

__all__ = [
    "ANONYMOUS",
    "CALLER",
    "QUOTA_EXCEEDED",
    "Counts",
    "Period",
    "SessionMeter",
    "UsageMeter",
    "UsageStore",
]
