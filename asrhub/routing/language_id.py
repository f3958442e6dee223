"""A session's language, for routing: the client's hint, else identified on its speech.

    no hint → utterance 1: identify (whisper base) → "ko" p=0.93 ≥ confident → kept
              utterance 2…: "ko" (source "session"), no identification
    p below ``confident`` → this utterance routes by its best guess, the next one is identified
              again (a short "ok" says little; the next sentence says more)

Identification is bounded by ``timeout_s``; when it fails (no identifier, an engine fault, the
timeout), the utterance routes as "language unknown" (the ``*`` row) and the next one tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asrhub.frames import Samples

Identify = Callable[[Samples, tuple[str, ...]], Awaitable[tuple[str, float]]]
"""``identify(samples, among)`` → (language, probability); ``among`` empty: any language."""


@dataclass(frozen=True, slots=True)
class Identified:
    language: str | None
    source: str
    """``hint`` (the client's), ``session`` (identified earlier, kept), ``identified`` (on this
    utterance), ``unknown`` (identification failed or is not available)."""
    probability: float | None = None
    confident: bool = False


class SessionLanguage:
    """One session's identified language (nothing shared between sessions)."""

    def __init__(
        self, identify: Identify | None, *, confident: float, timeout_s: float, log: Any = None
    ) -> None:
        self.identify, self.confident, self.timeout_s, self.log = identify, confident, timeout_s, log
        self.kept: Identified | None = None
        self.lock = asyncio.Lock()
        """One identification at a time: an early final's and its final's route (or two quick
        utterances) share the first one's answer once it is sure."""

    async def of(self, samples: Samples, among: tuple[str, ...]) -> Identified:
        if self.kept is not None:
            return self.kept
        if self.identify is None:
            return Identified(None, "unknown")
        async with self.lock:
            if self.kept is not None:
                return self.kept
            return await self._identify(samples, among)

    async def _identify(self, samples: Samples, among: tuple[str, ...]) -> Identified:
        assert self.identify is not None
        try:
            language, p = await asyncio.wait_for(self.identify(samples, among), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an engine's fault: route as unknown, try again next time
            if self.log is not None:
                self.log.warning("language identification failed", error=f"{type(exc).__name__}: {exc}")
            return Identified(None, "unknown")
        found = Identified(language, "identified", round(p, 4), p >= self.confident)
        if found.confident:
            self.kept = Identified(language, "session", found.probability, True)
        return found
