"""Failover: one utterance's audio, tried on an ordered provider list, one answer out.

The only failover loop of the hub: the batch stage, the streaming stages (on the audio of an
utterance their stream lost) and ``Hub.transcribe`` all call :func:`failover`::

    providers:  [A, B, C]        breakers say: A open, B degraded, C closed
    order:      C, B             (A skipped: its circuit is open, probed in the background)
    C raises KeyError  → failure 1, C's breaker counts it, logged
    B answers          → Served("B", transcription), B's breaker closes
    every one failed   → AllFailed("C: KeyError: 'text'; B: …; A: skipped, …")

Rules: *any* exception from an engine (``ProviderError``, a timeout, a ``KeyError`` from a
client library choking on a reply, a ``RuntimeError``) is one failure of that provider, never an
escape; a reply that is not a well-formed :class:`Transcription` is a failure too (see
:func:`checked`); a call longer than ``timeout_s`` is a failure. Cancellation (a closed session)
is not a failure: it propagates. A full engine queue (:class:`~asrhub.plugin.PoolFull`) is
backpressure, not a failure: the call is retried (50 ms, doubling to 1 s) within its timeout,
while the session's ``pending`` stays held so its ``feed`` waits and the client's TCP stream
backs up; only a queue still full at the timeout fails the call (not counted in the breaker).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asrhub.frames import TARGET_RATE, Samples, Word
from asrhub.plugin import CallStats, CircuitBreakers, PoolFull, Provider, ProviderError, Transcription
from asrhub.telemetry import engine_call


@dataclass(frozen=True, slots=True)
class Served:
    provider: str
    result: Transcription
    route: Mapping[str, Any] | None = None
    """Why ``provider`` was tried (a routed utterance, ``provider: "auto"``); None: the
    session named its engines."""


class AllFailed(ProviderError):
    """No provider of the list served the audio; the message names every failure."""


def call_timeout(base_s: float, seconds_of_audio: float) -> float:
    """The time one call may take: ``base_s`` per started 30 s of audio."""
    return base_s * max(1.0, seconds_of_audio / 30.0)


def describe(name: str, exc: BaseException, timeout_s: float | None = None) -> str:
    """``"name: what went wrong"`` for a failure message (the engine's name once)."""
    if isinstance(exc, TimeoutError) and timeout_s is not None and not str(exc):
        return f"{name}: no answer within {timeout_s:g} s"
    if isinstance(exc, ProviderError):
        message = str(exc) or type(exc).__name__
    else:
        message = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return message if message.startswith(f"{name}:") else f"{name}: {message}"


async def failover(
    providers: Sequence[Provider],
    samples: Samples,
    *,
    breakers: CircuitBreakers,
    timeout_s: float,
    log: Any = None,
    segment_id: int | None = None,
    failures: list[str] | None = None,
    stats: CallStats | None = None,
    **options: Any,
) -> Served:
    """Transcribe ``samples`` with the first provider of ``providers`` (breaker order) that
    answers; ``options`` (language, prompt, …) go to every ``transcribe``. Raises
    :class:`AllFailed`; ``failures`` may carry earlier failures of the same utterance.
    ``stats``: the engines' live figures, fed with each call (:mod:`asrhub.routing.stats`)."""
    failures = list(failures or ())
    attempt = 0
    audio_s = len(samples) / TARGET_RATE
    for provider in breakers.order(list(providers)):
        breaker = breakers.of(provider)
        if not breaker.usable:
            failures.append(breaker.why_open())
            continue
        attempt += 1
        try:
            timing = stats.timing(provider.name, audio_s) if stats is not None else contextlib.nullcontext()
            with timing, engine_call(provider.name, attempt, audio_s, options.get("model")):
                result = checked(await _call(provider, samples, timeout_s, options))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # anything an engine raises is a failure of that engine
            failures.append(describe(provider.name, exc, timeout_s))
            if not isinstance(exc, PoolFull):
                breaker.failed(failures[-1])
            if log is not None:
                expected = isinstance(exc, ProviderError | TimeoutError | OSError | PoolFull)
                # an engine's fault, handled: a warning (its traceback at debug level)
                log.warning(
                    "provider failed", provider=provider.name, segment_id=segment_id, error=failures[-1]
                )
                if not expected:
                    log.debug("provider failure traceback", provider=provider.name, exc_info=True)
            continue
        breaker.succeeded()
        return Served(provider.name, result)
    raise AllFailed("; ".join(failures) or "no provider to try")


async def _call(provider: Provider, samples: Samples, timeout_s: float, options: dict[str, Any]) -> Any:
    """One engine call within ``timeout_s``; a full queue is waited out, not failed."""
    loop = asyncio.get_running_loop()
    deadline, delay = loop.time() + timeout_s, 0.05
    while True:
        try:
            return await asyncio.wait_for(provider.transcribe(samples, **options), deadline - loop.time())
        except PoolFull:
            if loop.time() + delay >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)


def checked(result: object) -> Transcription:
    """``result`` if it is a well-formed :class:`Transcription`; garbage from an engine (another
    type, non-string text, malformed or non-finite word times) raises :class:`ProviderError`,
    so it fails over or becomes ``provider_failed`` instead of reaching a client."""
    if not isinstance(result, Transcription):
        raise ProviderError(f"the engine returned {type(result).__name__}, not a Transcription")
    if not isinstance(result.text, str) or not isinstance(result.language, str | None):
        raise ProviderError("the engine returned a transcription whose text or language is not a string")
    for w in result.words or ():
        if not (
            isinstance(w, Word)
            and isinstance(w.word, str)
            and all(isinstance(v, int | float) and math.isfinite(v) for v in (w.start, w.end, w.probability))
        ):
            raise ProviderError(f"the engine returned a malformed word: {w!r:.80}")
    return result
