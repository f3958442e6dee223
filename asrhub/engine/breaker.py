"""One circuit breaker per provider, shared by every session of a hub.

A provider's health as every session sees it, so a dead endpoint is found out once for the
whole process, not once per session::

    calls:   ok  ok  x   .   .   ok  x  x  x  x  x  -   -   -   probe✓  ok
    state:   closed  |degraded|  closed |·open·(skipped)·····|  closed
                     x = a failed call (any exception, or no answer in time)

* **closed**: used in the session's failover order.
* **degraded** (a call failed within the last ``window_s``): tried *after* the healthy providers
  of a failover list, still tried when nothing else is left. So with a fallback, a dead endpoint
  costs one timeout per window for the whole hub.
* **open** (``failures_to_open`` failed calls in a row): skipped at once (the utterance fails
  over, or fails with ``provider_failed`` saying so); a background task probes the provider every
  ``window_s`` (``provider.probe()`` when it is :class:`~asrhub.plugin.Probed`, else a short
  silent ``transcribe``) and
  closes the circuit on the first success. A real call that succeeds closes it too.

Everything runs on the event loop; the probe task is cancelled by :meth:`Breakers.close`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import numpy as np

from asrhub.logging import get_logger
from asrhub.plugin import BreakerState, Priority, Probed, Provider

log = get_logger("asrhub.breaker")

PROBE_SAMPLES = np.zeros(8_000, np.float32)
"""Half a second of silence: what the background probe transcribes when a provider has no
``probe()`` of its own."""
PROBE_SAMPLES.flags.writeable = False


class Breaker:
    def __init__(self, provider: Provider, owner: Breakers) -> None:
        self.provider = provider
        self.owner = owner
        self.failures = 0
        self.last_failure = ""
        self._failed_at = -1e18
        self._probe: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._closed.set()

    @property
    def state(self) -> BreakerState:
        if self.failures >= self.owner.failures_to_open:
            return "open"
        if self.failures and asyncio.get_running_loop().time() - self._failed_at < self.owner.window_s:
            return "degraded"
        return "closed"

    @property
    def usable(self) -> bool:
        return self.state != "open"

    def why_open(self) -> str:
        return (
            f"{self.provider.name}: skipped, {self.failures} calls failed in a row "
            f"(last: {self.last_failure}); probing it in the background"
        )

    def succeeded(self) -> None:
        if self.failures:
            log.info("provider recovered", provider=self.provider.name)
        self.failures = 0
        self._closed.set()
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.last_failure = reason
        self._failed_at = asyncio.get_running_loop().time()
        if self.state == "open" and self._probe is None:
            log.warning("provider circuit open", provider=self.provider.name, error=reason)
            self._closed.clear()
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_healthy())

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _probe_until_healthy(self) -> None:
        while True:
            await asyncio.sleep(self.owner.window_s)
            try:
                await asyncio.wait_for(self._probe_once(), self.owner.probe_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_failure = f"probe: {type(exc).__name__}: {exc}".rstrip(": ")
                continue
            self._probe = None  # succeeded() must not cancel the task it runs in
            self.succeeded()
            return

    async def _probe_once(self) -> None:
        if isinstance(self.provider, Probed):
            await self.provider.probe()
        else:
            await self.provider.transcribe(PROBE_SAMPLES, priority=Priority.UPLOAD)  # after live finals

    async def close(self) -> None:
        task, self._probe = self._probe, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Breakers:
    """The breakers of one hub, one per provider (by name)."""

    def __init__(
        self, *, failures_to_open: int = 5, window_s: float = 30.0, probe_timeout_s: float = 60.0
    ) -> None:
        self.failures_to_open = failures_to_open
        self.window_s = window_s
        self.probe_timeout_s = probe_timeout_s
        self._by_name: dict[str, Breaker] = {}

    def of(self, provider: Provider) -> Breaker:
        breaker = self._by_name.get(provider.name)
        if breaker is None or breaker.provider is not provider:
            breaker = self._by_name[provider.name] = Breaker(provider, self)
        return breaker

    def order(self, providers: Sequence[Provider]) -> list[Provider]:
        """The failover order: closed providers first, then degraded ones, then open ones
        (which :func:`asrhub.engine.failover.failover` skips), each group in the list's order."""
        rank = {"closed": 0, "degraded": 1, "open": 2}
        return sorted(providers, key=lambda p: rank[self.of(p).state])

    async def close(self) -> None:
        for breaker in list(self._by_name.values()):
            await breaker.close()
