"""Who is calling, for the work a request does out of sight of its transport (an upload's
engine calls, a gRPC operation's job): each door sets it for the request's task (asyncio copies
it into the tasks the request starts); None: no key (a hub without keys, an in-process call)."""

from __future__ import annotations

import contextvars

CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("asrhub_caller", default=None)
"""The identity (key fingerprint) of the current request's key."""
