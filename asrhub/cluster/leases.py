"""The cluster: hub processes on many cores and machines sharing one Redis (``[cluster]``).

What lives in Redis (every key under ``cluster.key_prefix``, default ``asrhub``)::

    asrhub:leases                 ZSET  "<session_id>@<node>" → lease expiry (ms, Redis clock)
    asrhub:leases:key:<keyhash>   ZSET  the same members, per API key (hashed, never the key)
    asrhub:resume:<token>         HASH  a resumable session: sid, key, config, owner, epoch,
                                        pos (bytes), seg, evicted; once ended, a tombstone
                                        (gone, epoch, owner) — see asrhub/cluster/resume.py
    asrhub:resume:<token>:log     LIST  its finals / per-utterance errors / terminal events
    asrhub:takeover               channel: "<token> <node>" when a node claims a session
    asrhub:sio:*                  python-socketio's AsyncRedisManager (Socket.io across nodes)

Admission (:meth:`Cluster.admit`) is one Lua script: drop expired leases, count, refuse or add —
atomic, so two nodes can never both take the last slot. Each node renews its sessions' leases
every ``lease_s / 3`` (:meth:`_heartbeat`, one script call); a node that dies stops renewing
and its sessions' capacity comes back within ``lease_s``. Everything else a node writes goes
through one ordered queue (:class:`Writer`): its effects reach Redis in the order the node
produced them, batched into pipelines.

Redis unreachable: every call gives up after ``redis_timeout_s`` (no retries, no hang).
Running sessions are not affected. :meth:`admit` answers None and the hub falls back to its own
limits; writes are dropped and the node re-creates its leases and resume records when Redis
answers again (:meth:`_heartbeat` after a failure re-sends everything it holds).

::

    node:   open ─admit(script)─▶ lease ─renew─renew─renew─ … close ─release
    Redis:  leases ZSET  ────────[sid@node, expiry]───────────────────────▶ removed
    node dies:                                 ─renew stops─▶ expiry passes ─▶ next admit drops it
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from asrhub.config import Limits
from asrhub.logging import get_logger
from asrhub.settings.schema import ClusterSettings
from asrhub.tasks import stop_tasks

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import Pipeline

log = get_logger("asrhub.cluster")

WRITE_QUEUE = 20_000
"""Writes waiting for Redis at most; past it (a long outage) the oldest are dropped and the
node re-sends its state when Redis answers again."""

ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = now + tonumber(ARGV[2])
local force = ARGV[5] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not force and not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 1
end
if #KEYS > 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if not force and not redis.call('ZSCORE', KEYS[2], ARGV[1])
     and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
    return 2
  end
  redis.call('ZADD', KEYS[2], expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[2]))
end
redis.call('ZADD', KEYS[1], expiry, ARGV[1])
return 0
"""
"""KEYS: leases[, key leases]; ARGV: member, lease_ms, max_sessions, max_per_key, force.
0 admitted, 1 at max_sessions, 2 at the key's limit."""

RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
local n = (#ARGV - 2) / 2
for i = 0, n - 1 do
  local member, key = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  redis.call('ZADD', ARGV[2] .. ':leases', now + lease, member)
  if key ~= '' then
    local z = ARGV[2] .. ':leases:key:' .. key
    redis.call('ZADD', z, now + lease, member)
    redis.call('PEXPIRE', z, 2 * lease)
  end
end
return n
"""
"""ARGV: lease_ms, prefix, then (member, keyhash or '') pairs: this node's live sessions."""


def key_hash(key: str | None) -> str:
    """An API key's identity in Redis (never the key itself)."""
    return "" if key is None else hashlib.sha256(key.encode()).hexdigest()[:24]


async def _close_quietly(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(0.5):
            await pubsub.aclose()


Op = Callable[["Pipeline"], None]
"""Queues the commands of one write on a pipeline."""
Done = Callable[[Any], None]


class Writer:
    """One ordered queue of Redis writes, sent in pipelines by one task. ``on_failure`` runs
    when a batch could not be sent (the node then re-sends its state later)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._queue: deque[tuple[Op, Done | None]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="asrhub-cluster-writer")

    async def stop(self, flush_s: float) -> None:
        if self._task is None:
            return
        if self._queue:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_s):
                    await self.flushed()
        self._stopping = True  # a cancellation lost mid-call still ends the loop
        if stuck := await stop_tasks([self._task], flush_s):
            log.warning("cluster tasks did not stop when cancelled", tasks=stuck)

    async def flushed(self) -> None:
        await self._idle.wait()

    def put(self, op: Op, done: Done | None = None) -> None:
        if len(self._queue) >= WRITE_QUEUE:
            self._queue.popleft()
            self._cluster.lost_state()
        self._queue.append((op, done))
        self._idle.clear()
        self._wake.set()

    async def _run(self) -> None:
        cluster = self._cluster
        while not self._stopping:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 500))]
            pipe = cluster.redis.pipeline(transaction=False)
            spans = []
            for op, _done in batch:
                before = len(pipe.command_stack)
                op(pipe)
                spans.append((before, len(pipe.command_stack)))
            try:
                results = await cluster.call(pipe.execute(raise_on_error=False))
            except Exception as exc:
                cluster.failed(exc)
                cluster.lost_state()
                await asyncio.sleep(min(1.0, cluster.settings.lease_s / 6))
                continue
            cluster.succeeded()
            for (_op, done), (first, end) in zip(batch, spans, strict=True):
                if done is not None:
                    done(results[end - 1] if end > first else None)


def queue_script(pipe: Pipeline, script: Any, keys: list[str], args: list[Any]) -> None:
    """Queue a registered Lua script on a pipeline (loaded by the pipeline if Redis lacks it)."""
    pipe.scripts.add(script)
    pipe.evalsha(script.sha, len(keys), *keys, *args)


class Cluster:
    """This node's link to the cluster state (one per hub process)."""

    def __init__(self, settings: ClusterSettings, limits: Limits, *, redis: Redis | None = None) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        if settings.redis_url is None and redis is None:
            raise ValueError("cluster.redis_url is not set")
        self.settings = settings
        self.limits = limits
        self.node = secrets.token_hex(6)
        self.prefix = settings.key_prefix
        self.lease_ms = int(settings.lease_s * 1000)
        timeout = settings.redis_timeout_s
        self.redis: Redis = redis or Redis.from_url(
            str(settings.redis_url),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._admit = self.redis.register_script(ADMIT)
        self._renew = self.redis.register_script(RENEW)
        self.writer = Writer(self)
        self.available = True
        """False after a Redis call failed, until one succeeds."""
        self._lost = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._leases: dict[str, str] = {}
        """This node's sessions holding a lease: member → key hash."""
        self._restore: list[Callable[[], Iterable[tuple[Op, Done | None]]]] = []
        self._renewals: list[Callable[[], Iterable[tuple[Op, Done | None]]]] = []
        self._listeners: list[Callable[[str, str], None]] = []

    # ------------------------------------------------------------------ plumbing

    async def call(self, awaitable: Awaitable[Any]) -> Any:
        """Await one Redis call, at most ``redis_timeout_s`` (a hung connection never hangs us).
        The call runs in a task of its own (``wait_for``), so a cancellation never lands inside
        the client library (which may swallow it); one lost as the call completes is caught by
        the loops' stopping flags (:mod:`asrhub.tasks`)."""
        return await asyncio.wait_for(awaitable, self.settings.redis_timeout_s)

    def failed(self, exc: BaseException) -> None:
        from redis.exceptions import ResponseError

        if isinstance(exc, ResponseError):  # Redis answered: no outage (an ACL, a bad script)
            log.warning("redis refused a command", error=repr(exc))
            return
        if self.available:
            log.warning(
                "redis unavailable: running sessions go on, new ones use local limits", error=repr(exc)
            )
        self.available = False

    def succeeded(self) -> None:
        if not self.available:
            log.info("redis available again")
        self.available = True

    def lost_state(self) -> None:
        """Some writes did not reach Redis: re-send the node's state at the next renewal."""
        self._lost = True

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def on_restore(self, state: Callable[[], Iterable[tuple[Op, Done | None]]]) -> None:
        """``state()`` gives the writes that re-create what a part of the node keeps in Redis
        (resume records), for after an outage or a Redis restart."""
        self._restore.append(state)

    def on_renew(self, ops: Callable[[], Iterable[tuple[Op, Done | None]]]) -> None:
        """``ops()`` gives writes to send with every lease renewal (TTL refreshes)."""
        self._renewals.append(ops)

    def on_takeover(self, listener: Callable[[str, str], None]) -> None:
        """``listener(token, node)`` when any node claims a resumable session."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.writer.start()
        self._tasks.append(asyncio.create_task(self._renew_forever(), name="asrhub-cluster-renew"))
        self._tasks.append(asyncio.create_task(self._listen_forever(), name="asrhub-cluster-listen"))
        try:
            await self.call(self.redis.ping())
            self.succeeded()
        except Exception as exc:
            self.failed(exc)
        log.info("cluster node started", node=self.node, redis=self.available)

    async def stop(self) -> None:
        self._stopping = True  # the loops end at their next turn even if a cancellation is lost
        await self.writer.stop(self.settings.redis_timeout_s * 4)
        if stuck := await stop_tasks(self._tasks, self.settings.redis_timeout_s * 4):
            log.warning("cluster tasks did not stop when cancelled", tasks=stuck)
        with contextlib.suppress(Exception):
            await self.call(self.redis.aclose())

    # ------------------------------------------------------------------ limits

    def member(self, session_id: str) -> str:
        return f"{session_id}@{self.node}"

    async def admit(
        self, session_id: str, key: str | None, *, force: bool = False, max_per_key: int | None = None
    ) -> int | None:
        """Take a cluster-wide slot for a session about to open: 0 admitted, 1 at
        ``max_sessions``, 2 at the key's limit; None: Redis did not answer (the caller falls
        back to this node's own limits; the lease is added when Redis is back)."""
        member, khash = self.member(session_id), key_hash(key)
        keys = [self.key("leases")] + ([self.key("leases", "key", khash)] if khash else [])
        limits = self.limits
        args: list[str | int] = [
            member,
            self.lease_ms,
            limits.max_sessions,
            limits.max_sessions_per_key if max_per_key is None else max_per_key,
            int(force),
        ]
        try:
            verdict = int(await self.call(self._admit(keys=keys, args=args)))
        except Exception as exc:
            self.failed(exc)
            self._leases[member] = khash
            self.lost_state()
            return None
        self.succeeded()
        if verdict == 0:
            self._leases[member] = khash
        return verdict

    def hold(self, session_id: str, key: str | None) -> None:
        """Count a session opened without :meth:`admit` (a transport using ``Hub.open``
        directly): its lease is added by the next write, unchecked."""
        member, khash = self.member(session_id), key_hash(key)
        self._leases[member] = khash
        self.writer.put(
            lambda pipe: queue_script(pipe, self._renew, [], [self.lease_ms, self.prefix, member, khash])
        )

    def release(self, session_id: str) -> None:
        member = self.member(session_id)
        khash = self._leases.pop(member, None)
        if khash is None:
            return

        def op(pipe: Pipeline) -> None:
            pipe.zrem(self.key("leases"), member)
            if khash:
                pipe.zrem(self.key("leases", "key", khash), member)

        self.writer.put(op)

    async def _renew_forever(self) -> None:
        period = self.settings.lease_s / 3
        while not self._stopping:
            await asyncio.sleep(period)
            await self.renew()

    async def renew(self) -> None:
        """Renew every lease this node holds (one script call); after an outage, re-send
        everything (resume records included)."""
        args: list[str | int] = [self.lease_ms, self.prefix]
        for member, khash in self._leases.items():
            args += [member, khash]
        try:
            await self.call(self._renew(keys=[], args=args))
        except Exception as exc:
            self.failed(exc)
            self.lost_state()
            return
        self.succeeded()
        sources = self._renewals
        if self._lost:
            self._lost = False
            sources = [*self._restore, *self._renewals]
        for source in sources:
            for op, done in source():
                self.writer.put(op, done)

    # ------------------------------------------------------------------ takeover channel

    async def publish_takeover(self, token: str) -> None:
        with contextlib.suppress(Exception):
            await self.call(self.redis.publish(self.key("takeover"), f"{token} {self.node}"))

    async def _listen_forever(self) -> None:
        channel = self.key("takeover")
        while not self._stopping:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await self.call(pubsub.subscribe(channel))
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    data = message.get("data")
                    text = data.decode() if isinstance(data, bytes) else str(data)
                    token, _, node = text.partition(" ")
                    if node != self.node:
                        for listener in self._listeners:
                            listener(token, node)
            except asyncio.CancelledError:
                await _close_quietly(pubsub)
                raise
            except Exception as exc:
                self.failed(exc)
                await _close_quietly(pubsub)
                await asyncio.sleep(min(1.0, self.settings.lease_s / 6))
                continue
            await _close_quietly(pubsub)  # stopping
