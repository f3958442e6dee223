"""POST one job's result to its callback URL: signed, retried, bounded.

Each attempt: ``timeout_s`` for connect + send + answer, no redirects (a 3xx is a failed
attempt), at most :data:`MAX_ANSWER_BYTES` of the answer read; a 2xx ends the delivery. After a
failed attempt the next waits a random time in [0, min(retry_max_s, retry_base_s × 2^n)] (full
jitter), up to ``max_attempts`` attempts and none starting later than ``deliver_within_s`` after
the first. A target refused by the address check is not retried (it will not become allowed).

Headers: ``Content-Type: application/json``, ``X-Asrhub-Job-Id`` and ``Idempotency-Key`` (the
job id: a receiver that sees it twice has seen the job), ``X-Asrhub-Signature``
(:mod:`~asrhub.jobs.signing`), ``X-Asrhub-Attempt`` (1, 2, …).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from asrhub.logging import get_logger
from asrhub.settings.schema import JobsSettings

from .signing import HEADER, sign
from .targets import Allow, CheckedResolver, RefusedTarget

log = get_logger("asrhub.jobs")

MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Callback:
    url: str
    method: str
    secret: str


def backoff(attempt: int, settings: JobsSettings) -> float:
    """The wait after failed attempt number ``attempt`` (1-based), full jitter."""
    return random.uniform(0.0, min(settings.retry_max_s, settings.retry_base_s * 2 ** (attempt - 1)))


class Deliverer:
    """One HTTP client (its own checked resolver, no cookies) for every callback of a node."""

    def __init__(self, settings: JobsSettings) -> None:
        self.settings = settings
        self.allow = Allow(settings.callback_allow)
        self._http: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(
                resolver=CheckedResolver(self.allow), limit=64, use_dns_cache=False
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def attempt(self, job_id: str, callback: Callback, body: bytes, number: int) -> tuple[bool, str]:
        """One POST; (delivered, what happened)."""
        headers = {
            "Content-Type": "application/json",
            "X-Asrhub-Job-Id": job_id,
            "Idempotency-Key": job_id,
            "X-Asrhub-Attempt": str(number),
            HEADER: sign(callback.secret, body),
        }
        try:
            async with self._client().request(
                callback.method, callback.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.content.read(MAX_ANSWER_BYTES)  # bounded; the rest is dropped with the connection
                return 200 <= resp.status < 300, f"HTTP {resp.status}"
        except RefusedTarget:
            raise
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedTarget) or isinstance(exc.__cause__, RefusedTarget):
                raise RefusedTarget(str(exc.__cause__ or exc.os_error)) from None
            return False, f"{type(exc).__name__}: {exc}"[:300]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return False, f"{type(exc).__name__}: {exc}"[:300]

    async def deliver(
        self, job_id: str, callback: Callback, body: bytes, begin: Callable[[], Awaitable[int | None]]
    ) -> tuple[bool | None, int, str]:
        """Attempts until one succeeds or the bounds are reached: (delivered — None when
        ``begin`` stopped it —, the last attempt's number, its outcome). ``begin()`` before each
        attempt gives its number (counted where the job lives: a job taken over by another node
        goes on counting) or None: do not post (the job was delivered, or is no longer ours)."""
        settings = self.settings
        deadline = time.monotonic() + settings.deliver_within_s
        number, outcome = 0, "not attempted"
        while True:
            began = await begin()
            if began is None:
                return None, number, "stopped"
            number = began
            if number > settings.max_attempts:
                return False, number - 1, outcome
            try:
                ok, outcome = await self.attempt(job_id, callback, body, number)
            except RefusedTarget as exc:
                return False, number, str(exc)
            if ok:
                return True, number, outcome
            log.info("callback attempt failed", job=job_id, attempt=number, outcome=outcome)
            wait = backoff(number, settings)
            if number >= settings.max_attempts or time.monotonic() + wait > deadline:
                return False, number, outcome
            await asyncio.sleep(wait)
