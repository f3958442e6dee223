"""A key's routing policy (``[routing.keys."key-…"]``): the engines its utterances may use, and
whether quality (the language table's order) or cost (``routing.costs``, cheapest first) leads.
"""

from __future__ import annotations

from collections.abc import Mapping

from asrhub.settings.schema import KeyRouting, RoutingSettings

EVERY_KEY = "*"


def policy_of(settings: RoutingSettings, key: str | None) -> KeyRouting:
    """The policy of the caller ``key`` (its fingerprint; None: no key): its own, else ``*``'s,
    else every engine by quality."""
    keys = settings.keys
    return (keys.get(key) if key is not None else None) or keys.get(EVERY_KEY) or KeyRouting()


def apply(policy: KeyRouting, names: list[str], costs: Mapping[str, float]) -> list[str]:
    """``names`` (best first) as ``policy`` wants them: only the allowed ones, and with
    ``prefer = "cost"`` the cheapest first (the given order among equals)."""
    allowed = [n for n in names if policy.allowed is None or _allowed(n, policy.allowed)]
    if policy.prefer == "cost":
        allowed.sort(key=lambda n: costs.get(n, costs.get(n.partition(":")[0], 1.0)))
    return allowed


def _allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """``whisper`` allows each of its models; ``whisper:base`` that model alone."""
    return name in allowed or name.partition(":")[0] in allowed
