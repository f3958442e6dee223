"""Jobs in a cluster: they live in Redis, so any node runs them and a dead node's job is run again.

::

    asrhub:job:<id>           HASH   kind, params, key, url, method, size, state, attempts,
                                     owner, runs, created, finished, error (kept jobs.keep_s)
    asrhub:job:<id>:audio     STRING the upload, from submission until a run's result is saved
    asrhub:job:<id>:result    STRING the callback body, from the run until the job is finished
    asrhub:jobs:queue         LIST   job ids waiting
    asrhub:jobs:leases        ZSET   job id → lease expiry (ms, Redis clock) of the running ones
    asrhub:jobs:bytes         STRING the bytes of every audio above together

Admission (one script): jobs waiting or running cluster-wide < ``jobs.max_queued`` and their
audio + this upload ≤ ``jobs.max_queued_bytes`` (Redis holds at most that much audio for jobs),
else ``capacity``. A node claims a job (one script: an expired lease first — a dead node's job —,
else the head of the queue) with a lease of ``cluster.lease_s`` that it renews every third of it
while it runs. When the run's result is saved the audio is deleted; a node that takes the job
over later delivers the saved result rather than transcribing again.

Delivery: before each POST one script checks that the job is not finished and that this node
still owns it, and counts the attempt (the attempts of every node add up against
``jobs.max_attempts``); after a 2xx one script marks the job ``done``. What is guaranteed:

* the hub never POSTs a job whose delivery was answered 2xx and recorded (``done``): every node
  checks that atomically before each attempt;
* a job is delivered at least once while attempts and time remain, even when the node running
  it dies (its lease expires and another node takes it);
* a node dying after the receiver's 2xx but before recording it, or a node so stalled that its
  lease expired while it was posting, can make a second POST of the same body with the same
  ``Idempotency-Key`` (the job id): a receiver that keeps the ids it has seen gets every job once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from typing import TYPE_CHECKING, Any

from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.settings.schema import JobsSettings

from .delivery import Callback, Deliverer
from .queue import Job, Runner, Workers
from .signing import key_secret

if TYPE_CHECKING:
    from asrhub.cluster.leases import Cluster

log = get_logger("asrhub.jobs")

POLL_S = 0.2
"""An idle worker looks for a job this often (± 50 %)."""

SUBMIT = """
local waiting = redis.call('LLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if waiting >= tonumber(ARGV[2]) then return 1 end
local bytes = tonumber(redis.call('GET', KEYS[3]) or '0')
if bytes + tonumber(ARGV[4]) > tonumber(ARGV[3]) then return 2 end
redis.call('INCRBY', KEYS[3], ARGV[4])
redis.call('SET', KEYS[5], ARGV[#ARGV], 'PX', ARGV[5])
for i = 6, #ARGV - 1, 2 do redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[4], ARGV[5])
redis.call('RPUSH', KEYS[1], ARGV[1])
return 0
"""
"""KEYS: queue, leases, bytes, job, audio; ARGV: id, max_queued, max_bytes, size, keep_ms,
field/value pairs, audio. 0 admitted, 1 too many jobs, 2 too much audio."""

CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)[1]
if not id then id = redis.call('LPOP', KEYS[1]) end
if not id then return false end
local job = ARGV[3] .. ':job:' .. id
local state = redis.call('HGET', job, 'state')
if not state or state == 'done' or state == 'failed' then
  redis.call('ZREM', KEYS[2], id)
  return false
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), id)
redis.call('HSET', job, 'owner', ARGV[1], 'state', 'running')
redis.call('HINCRBY', job, 'runs', 1)
return id
"""
"""KEYS: queue, leases; ARGV: node, lease_ms, prefix. The claimed job id, or nil."""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
"""KEYS: leases, job; ARGV: id, node, lease_ms. 1 renewed, 0 no longer ours."""

SAVE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 'run_error', ARGV[5])
if redis.call('DEL', KEYS[3]) == 1 then redis.call('DECRBY', KEYS[4], ARGV[4]) end
return 1
"""
"""KEYS: job, result, audio, bytes; ARGV: node, body, keep_ms, size, run error."""

BEGIN = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""
"""KEYS: job; ARGV: node. The attempt's number, or -1: do not post."""

FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' or state == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'error', ARGV[3], 'finished', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
if redis.call('DEL', KEYS[4]) == 1 then redis.call('DECRBY', KEYS[5], ARGV[6]) end
return 1
"""
"""KEYS: job, leases, result, audio, bytes; ARGV: id, state, error, finished, keep_ms, size."""


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class RedisJobs(Workers):
    """The cluster's job queue, as this node sees it (:class:`~asrhub.jobs.queue.JobQueue`'s
    interface)."""

    def __init__(self, cluster: Cluster, settings: JobsSettings, run: Runner) -> None:
        self.cluster = cluster
        self.redis = cluster.redis
        self.settings = settings
        self.run = run
        self.deliverer = Deliverer(settings)
        self.lease_ms = cluster.lease_ms
        self.keep_ms = int(settings.keep_s * 1000)
        self.delivered: list[tuple[str, float]] = []
        self._submit = self.redis.register_script(SUBMIT)
        self._claim = self.redis.register_script(CLAIM)
        self._renew = self.redis.register_script(RENEW)
        self._save = self.redis.register_script(SAVE)
        self._begin = self.redis.register_script(BEGIN)
        self._finish = self.redis.register_script(FINISH)
        self._workers: list[asyncio.Task[None]] = []
        # a job of several MB crosses the link in more than redis_timeout_s on a slow one
        self.timeout_s = max(5.0, cluster.settings.redis_timeout_s)

    def key(self, *parts: str) -> str:
        return self.cluster.key(*parts)

    async def call(self, awaitable: Any) -> Any:
        return await asyncio.wait_for(awaitable, self.timeout_s)  # see Cluster.call

    async def submit(self, job: Job) -> Job:
        data = job.data or b""
        fields = {
            "kind": job.kind,
            "params": json.dumps(job.params),
            "key": job.key_id or "",
            "url": job.callback.url,
            "method": job.callback.method,
            "size": str(len(data)),
            "state": "queued",
            "attempts": "0",
            "runs": "0",
            "created": repr(job.created),
        }
        pairs = [x for item in fields.items() for x in item]
        keys = [self.key("jobs", "queue"), self.key("jobs", "leases"), self.key("jobs", "bytes")]
        keys += [self.key("job", job.id), self.key("job", job.id, "audio")]
        args: list[Any] = [
            job.id,
            self.settings.max_queued,
            self.settings.max_queued_bytes,
            len(data),
            self.keep_ms,
        ]
        try:
            answer = await self.call(self._submit(keys=keys, args=[*args, *pairs, data]))
        except Exception as exc:
            log.warning("job store unavailable", error=repr(exc))
            raise HubError("capacity", "the job store (Redis) is unavailable; retry later") from None
        if answer == 1:
            raise HubError("capacity", f"{self.settings.max_queued} jobs are waiting or running; retry later")
        if answer == 2:
            raise HubError("capacity", "the waiting jobs hold as much audio as this hub keeps; retry later")
        job.data = None  # it is in Redis now
        return job

    async def status(self, job_id: str, key_id: str | None) -> dict[str, Any] | None:
        try:
            raw = await self.call(self.redis.hgetall(self.key("job", job_id)))
        except Exception as exc:
            log.warning("job store unavailable", error=repr(exc))
            raise HubError("capacity", "the job store (Redis) is unavailable; retry later") from None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if not fields or fields.get("key", "") != (key_id or ""):
            return None
        return {
            "id": job_id,
            "status": fields.get("state", "queued"),
            "attempts": int(fields.get("attempts") or 0),
            "runs": int(fields.get("runs") or 0),
            "created": round(float(fields.get("created") or 0.0), 3),
            "finished": round(float(fields["finished"]), 3) if fields.get("finished") else None,
            "error": fields.get("error") or None,
        }

    async def _work(self) -> None:
        claim_keys = [self.key("jobs", "queue"), self.key("jobs", "leases")]
        while True:
            try:
                claimed = await self.call(
                    self._claim(keys=claim_keys, args=[self.cluster.node, self.lease_ms, self.cluster.prefix])
                )
            except Exception as exc:  # an outage: said once by the cluster link, polled again
                self.cluster.failed(exc)
                claimed = None
            if not claimed:
                await asyncio.sleep(POLL_S * random.uniform(0.5, 1.5))
                continue
            job_id = _text(claimed)
            renewing = asyncio.create_task(self._renew_lease(job_id))
            try:
                await self.process(job_id)
            except Exception:  # Redis gone mid-job: the lease runs out and a node runs it again
                log.exception("job interrupted", job=job_id)
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing

    async def _renew_lease(self, job_id: str) -> None:
        keys = [self.key("jobs", "leases"), self.key("job", job_id)]
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            with contextlib.suppress(Exception):
                if not await self.call(
                    self._renew(keys=keys, args=[job_id, self.cluster.node, self.lease_ms])
                ):
                    log.warning("job lease lost", job=job_id)
                    return

    async def process(self, job_id: str) -> None:
        job_key = self.key("job", job_id)
        result_key, audio_key = self.key("job", job_id, "result"), self.key("job", job_id, "audio")
        bytes_key = self.key("jobs", "bytes")
        fields = {_text(k): _text(v) for k, v in (await self.call(self.redis.hgetall(job_key))).items()}
        size = int(fields.get("size") or 0)
        secret = key_secret(self.settings.callback_secret or "", fields.get("key") or None)
        callback = Callback(url=fields["url"], method=fields.get("method") or "POST", secret=secret)
        body: bytes | None = await self.call(self.redis.get(result_key))
        error = fields.get("run_error") or None
        if body is None:
            data = await self.call(self.redis.get(audio_key))
            if data is None:
                await self._end(job_id, "failed", "the job's audio is gone", size)
                return
            job = Job(
                kind=fields["kind"],
                params=json.loads(fields["params"]),
                data=data,
                callback=callback,
                key_id=fields.get("key") or None,
                id=job_id,
            )
            body, error = await self.run(job)
            job.data = data = None
            saved = await self.call(
                self._save(
                    keys=[job_key, result_key, audio_key, bytes_key],
                    args=[self.cluster.node, body, self.keep_ms, size, error or ""],
                )
            )
            if not saved:
                log.info("job taken over by another node while it ran", job=job_id)
                return
        ready = time.monotonic()

        async def begin() -> int | None:
            number = await self.call(self._begin(keys=[job_key], args=[self.cluster.node]))
            return None if number < 0 else int(number)

        ok, attempts, outcome = await self.deliverer.deliver(job_id, callback, body, begin)
        if ok is None:
            return
        if ok:
            self.delivered = [*self.delivered[-999:], (job_id, time.monotonic() - ready)]
        state = "done" if ok and error is None else "failed"
        await self._end(job_id, state, (error or "") if ok else f"callback not delivered: {outcome}", size)
        log.info("job finished", job=job_id, status=state, attempts=attempts)

    async def _end(self, job_id: str, state: str, error: str, size: int) -> None:
        keys = [self.key("job", job_id), self.key("jobs", "leases"), self.key("job", job_id, "result")]
        keys += [self.key("job", job_id, "audio"), self.key("jobs", "bytes")]
        await self.call(
            self._finish(keys=keys, args=[job_id, state, error, repr(time.time()), self.keep_ms, size])
        )
