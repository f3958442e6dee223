"""Fencing of resumable sessions between racing nodes, all real and on 127.0.0.1: one
``redis-server`` (no persistence, as deploy/docker-compose.yml runs it) and two ``asrhub serve``
nodes (faster-whisper tiny.en), A and B, each logged in to Redis as its own ACL user.

The faults are real ones:

* **a node misses a takeover message** (pub/sub is lossy: a message published while a
  subscriber is disconnected is gone): ``ACL SETUSER hub-a resetchannels`` makes Redis drop A's
  subscriber and refuse its re-subscription until the channels are given back;
* **Redis loses everything**: SIGKILL and restart without persistence, or ``FLUSHALL`` (which no
  node notices as an outage);
* **a node is paused** (SIGSTOP / SIGCONT), to decide which node speaks to Redis first.

Each case fails on the code before the fencing rules of docs/cluster.md ("Fencing"): a stale node
re-created the record first and the live owner gave its session up (4409), a stale copy answered
a resume after Redis lost the record (a final twice), a session ended on purpose was resumed from
the stale copy, a malformed token reached a key name ("redis unavailable" in the log), and a
burst of ``session.update`` queued one Redis write per update.

One Redis and one pair of nodes serve the module (~15 s to start). Waits poll against deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from redis.asyncio import Redis as RedisClient
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from asrhub.client import read_audio_file
from asrhub.cluster import resume as cluster_resume
from asrhub.cluster.leases import Cluster
from asrhub.cluster.resume import pcm_position
from asrhub.config import Limits
from asrhub.frames import SessionUpdated
from asrhub.hub import Hub
from asrhub.settings.schema import ClusterSettings
from asrhub.wiring import build_pipeline
from tests.audio_utils import fixture, fixture_entry, wer
from tests.reliability.harness import RawWS, WSClosed, metric_sum, parse_metrics

from .conftest import Node, Redis, healthz, start_nodes, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

LEASE_S = 3.0
BPS = 32_000  # 16 kHz PCM16 mono
STEP = 3200  # 0.1 s of audio per frame
FIGURES: dict[str, Any] = {}
RSS_BOUND_MB = 800
"""Each node (hub + whisper tiny.en) stays under this resident size through every case."""


@dataclass
class Pair:
    redis: Redis
    a: Node
    b: Node

    def nodes(self) -> list[Node]:
        return [self.a, self.b]


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    server = Redis(users=("hub-a", "hub-b"))
    server.start()
    base = {
        "ASRHUB_CLUSTER__LEASE_S": str(LEASE_S),
        "ASRHUB_LIMITS__RESUME_WINDOW_S": "60",
        "ASRHUB_DEFAULT_PROVIDER": "whisper",
        "ASRHUB_LOG__LEVEL": "info",
        "ASRHUB_METRICS__OPERATOR_SAMPLE": "0",
    }
    a = Node("fence-a", {**base, "ASRHUB_CLUSTER__REDIS_URL": server.url_of("hub-a")})
    b = Node("fence-b", {**base, "ASRHUB_CLUSTER__REDIS_URL": server.url_of("hub-b")})
    try:
        start_nodes([a, b])
        yield Pair(server, a, b)
    finally:
        for node in (a, b):
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.proc.pid, signal.SIGCONT)
            node.close()
        server.stop()
        if FIGURES:
            print("\nfencing figures:", json.dumps(FIGURES))


@pytest_asyncio.fixture(loop_scope="module")
async def admin(pair: Pair) -> AsyncIterator[RedisClient]:
    """A Redis client of the test's own (the default user), fresh for each test; it reconnects
    after a restart of the server."""
    client = RedisClient.from_url(
        pair.redis.url, retry=Retry(NoBackoff(), 3), retry_on_error=[RedisConnectionError]
    )
    yield client
    await client.aclose()


# ---------------------------------------------------------------------------------- helpers


PCM, AUDIO = read_audio_file(fixture("silences.wav"))
SEGMENTS = fixture_entry("silences.wav")["segments"]


def at(seconds: float) -> int:
    """The byte offset of a stream time, on a whole sample."""
    return int(seconds * BPS) // 2 * 2


class Conn:
    """One WebSocket connection of a resumable session's client: its events, read as they
    come (so a node never sees a slow reader), and the close code if the hub closed it."""

    def __init__(self, ws: RawWS) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.closed: int | None = None
        self.ended = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, node: Node) -> Conn:
        return cls(await RawWS.connect(node.port))

    async def _read(self) -> None:
        try:
            while True:
                self.events.append(await self.ws.recv_json(within=600))
                self._changed.set()
        except WSClosed as exc:
            self.closed = exc.args[0] if exc.args else None
        except (TimeoutError, ConnectionError, OSError):
            pass
        finally:
            self.ended.set()
            self._changed.set()

    async def wait(self, match: Callable[[dict[str, Any]], bool], within: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for event in self.events:
                if match(event):
                    return event
            if self.ended.is_set():
                raise AssertionError(f"connection closed ({self.closed}) before {what}: {self.events[-5:]}")
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {within} s waiting for {what}: {self.events[-5:]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def finals(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "transcript.final"]

    async def send_audio(self, start: int, end: int, *, pace: float = 4.0) -> None:
        """Audio ``PCM[start:end]`` in 0.1 s frames at ``pace`` times real time."""
        for off in range(start, end, STEP):
            await self.ws.send_bytes(PCM[off : min(off + STEP, end)])
            await asyncio.sleep(0.1 / pace)

    def vanish(self) -> None:
        """The client's network dies: a TCP reset, no close frame (its session is detached)."""
        self.ws.reset()
        self._reader.cancel()

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


async def start_session(node: Node) -> tuple[Conn, str, str]:
    conn = await Conn.open(node)
    await conn.ws.send_json(
        {"type": "session.start", "config": {"language": "en", "audio": AUDIO}, "resume": True}
    )
    started = await conn.wait(lambda e: e["type"] == "session.started", 30, "session.started")
    return conn, started["resume_token"], started["session_id"]


async def first_utterance(conn: Conn) -> tuple[dict[str, Any], int]:
    """Utterance 1 and the first half of utterance 2; returns final 1 and the bytes sent."""
    cut = at(SEGMENTS[1]["start"] + 1.0)
    await conn.send_audio(0, cut)
    final = await conn.wait(lambda e: e["type"] == "transcript.final", 60, "final 1")
    assert final["segment_id"] == 1, final
    return final, cut


async def resume_on(node: Node, token: str, last: int, audio_from: int) -> tuple[Conn, dict[str, Any]]:
    conn = await Conn.open(node)
    await conn.ws.send_json(
        {"type": "session.resume", "token": token, "last_segment_id": last, "audio_from_bytes": audio_from}
    )
    answer = await conn.wait(lambda e: e["type"] in ("session.resumed", "error"), 60, "the resume's answer")
    return conn, answer


async def hold_takeovers(admin: RedisClient, user: str) -> None:
    """Pub/sub loses ``user``'s takeover messages: Redis disconnects its subscriber and refuses
    to subscribe it again (Socket.io's channel stays allowed)."""
    await admin.execute_command("ACL", "SETUSER", user, "resetchannels", "&asrhub:sio*")
    await until(lambda: subscribers(admin, 1), 10, f"{user}'s takeover subscription to be gone")


async def release_takeovers(admin: RedisClient, user: str, *, wait: bool = True) -> None:
    await admin.execute_command("ACL", "SETUSER", user, "&*")
    if wait:
        await until(lambda: subscribers(admin, 2), 10, f"{user} to subscribe to takeovers again")


async def subscribers(admin: RedisClient, n: int) -> bool:
    (_channel, count), *_ = await admin.pubsub_numsub("asrhub:takeover")
    return bool(count == n)


def pause(node: Node) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGSTOP)


def resume_process(node: Node) -> None:
    if node.proc is not None and node.proc.poll() is None:
        os.kill(node.proc.pid, signal.SIGCONT)


def log_text(node: Node) -> str:
    return Path(node.logs.name).read_text()


def rss_mb(node: Node) -> float:
    assert node.proc is not None
    with open(f"/proc/{node.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


IDLE_TASKS: dict[str, float] = {}
"""Each node's asyncio tasks when idle (before the first case)."""


async def scrape(node: Node, http: aiohttp.ClientSession | None = None) -> dict[str, float]:
    """``node``'s metrics, over ``http``'s connection when given: one client connection (one
    request-handler task on the node) whether or not the caller has a session open."""
    if http is None:
        async with aiohttp.ClientSession() as own:
            return await scrape(node, own)
    async with http.get(f"{node.url}/metrics") as resp:
        return parse_metrics(await resp.text())


async def settle(pair: Pair, admin: RedisClient, case: str) -> None:
    """Nothing is left: on either node no session, connection, resumable session, busy or queued
    engine call, or asyncio task beyond the idle node's; in Redis no lease. Each node's RSS is
    printed and within the bound."""
    left: dict[str, Any] = {}

    async def idle() -> bool:
        left.clear()
        async with aiohttp.ClientSession() as http:
            for node in pair.nodes():
                health = await healthz(http, node.url) or {"sessions": -1, "connections": -1}
                metrics = await scrape(node, http)
                counts = {
                    "sessions": health["sessions"],
                    "connections": health["connections"],
                    "resumable": metric_sum(metrics, "asrhub_resumable_sessions"),
                    "busy": metric_sum(metrics, "asrhub_inference_busy"),
                    "queued": metric_sum(metrics, "asrhub_inference_queue_depth"),
                    "tasks over idle": max(0.0, metrics["asrhub_event_loop_tasks"] - IDLE_TASKS[node.name]),
                }
                left.update({f"{node.name} {k}": v for k, v in counts.items() if v})
        leases = await admin.zcard("asrhub:leases")
        if leases:
            left["leases"] = leases
        return not left

    try:
        await until(idle, 30, "nothing left on the nodes and in Redis")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; left: {left}") from None
    sizes = {node.name: round(rss_mb(node), 1) for node in pair.nodes()}
    FIGURES[f"{case}_rss_mb"] = sizes
    print(f"\n{case}: node RSS (MB) {sizes}; nothing left")
    assert all(size < RSS_BOUND_MB for size in sizes.values()), sizes


def check_story(finals: list[dict[str, Any]]) -> None:
    """Every utterance exactly once, in order, with its words."""
    assert [f["segment_id"] for f in finals] == list(range(1, len(SEGMENTS) + 1)), [
        (f["segment_id"], f["text"]) for f in finals
    ]
    for final, segment in zip(finals, SEGMENTS, strict=True):
        assert wer(segment["text"], final["text"]) <= 0.2, (segment["text"], final["text"])
    assert [f["start"] for f in finals] == sorted(f["start"] for f in finals)


async def ready(pair: Pair, admin: RedisClient) -> None:
    """Both nodes running and subscribed (an earlier case may have left a hold)."""
    for node in pair.nodes():
        assert node.proc is not None and node.proc.poll() is None, node.log_tail()
        resume_process(node)
    for user in ("hub-a", "hub-b"):
        await admin.execute_command("ACL", "SETUSER", user, "&*")
    await until(lambda: subscribers(admin, 2), 20, "both nodes subscribed to takeovers")
    for node in pair.nodes():
        if node.name not in IDLE_TASKS:  # after one warm-up session (the engine's lazy parts)
            conn, _token, _sid = await start_session(node)
            await first_utterance(conn)
            await conn.ws.send_json({"type": "session.end"})
            await conn.wait(lambda e: e["type"] == "session.closed", 60, "the warm-up's end")
            await conn.close()

            async def quiet(node: Node = node) -> bool:
                async with aiohttp.ClientSession() as http:
                    return ((await healthz(http, node.url)) or {}).get("connections") == 0

            await until(quiet, 30, "the warm-up connection to close")
            IDLE_TASKS[node.name] = (await scrape(node))["asrhub_event_loop_tasks"]


# ---------------------------------------------------------------------------------- cases


async def test_a_stale_node_restoring_first_after_redis_lost_everything_does_not_take_the_live_session(
    pair: Pair, admin: RedisClient
) -> None:
    """A runs the session; the client moves to B while A misses the takeover message (held
    pub/sub, A paused). Redis is restarted empty with B paused, so A re-creates the record
    first, with its old epoch. B then re-creates it with its higher epoch and keeps its live
    session: every final exactly once, B's connection never closed; A lets its copy go."""
    await ready(pair, admin)
    a, b = pair.a, pair.b
    conn1, token, _sid = await start_session(a)
    final1, _cut = await first_utterance(conn1)
    await hold_takeovers(admin, "hub-a")
    pause(a)
    try:
        conn1.vanish()
        conn2, resumed = await resume_on(b, token, 1, at(final1["end"]))
        assert resumed["type"] == "session.resumed", resumed
        owner_b = (await admin.hget(f"asrhub:resume:{token}", "owner") or b"").decode()
        offset = resumed["resume_from_bytes"]
        await conn2.send_audio(offset, at(SEGMENTS[2]["start"] - 0.5))
        # Redis dies and comes back empty while B is paused: A will speak first.
        pause(b)
        try:
            pair.redis.stop()
            pair.redis.start()
            resume_process(a)

            async def a_recreated() -> bool:
                owner = await admin.hget(f"asrhub:resume:{token}", "owner")
                return owner is not None and owner.decode() != owner_b

            await until(a_recreated, 20, "the stale node A to re-create the record first")
        finally:
            resume_process(b)
        restarted = time.monotonic()

        async def b_owns() -> bool:
            fields = await admin.hgetall(f"asrhub:resume:{token}")
            return fields.get(b"owner", b"").decode() == owner_b

        await until(b_owns, 20, "B's higher epoch to win the record back")
        won = time.monotonic()
        FIGURES["owner_back_after_restart_s"] = round(won - restarted, 2)

        async def a_let_go() -> bool:
            async with aiohttp.ClientSession() as http:
                return ((await healthz(http, a.url)) or {}).get("sessions") == 0

        # A's next renewal finds B's higher epoch: within lease_s / 3 (+ a loaded machine's lag).
        await until(a_let_go, 2 * LEASE_S, "A to let its stale copy go")
        FIGURES["stale_copy_closed_after_s"] = round(time.monotonic() - won, 2)
        await conn2.send_audio(at(SEGMENTS[2]["start"] - 0.5), len(PCM))
        await conn2.ws.send_json({"type": "session.end"})
        closed = await conn2.wait(lambda e: e["type"] == "session.closed", 90, "session.closed")
        assert closed["reason"] == "end", closed
        assert not [e for e in conn2.events if e["type"] == "session.resumed"][1:]
        assert not [e for e in conn2.events if e["type"] == "error"], conn2.events
        check_story([final1, *conn2.finals()])
        await conn2.close()
    finally:
        resume_process(a)
        resume_process(b)
    await settle(pair, admin, "restore_race")


async def test_a_session_ended_on_its_new_node_is_not_resumed_from_the_stale_copy(
    pair: Pair, admin: RedisClient
) -> None:
    """A runs the session; the client moves to B (A misses the takeover) and ends it there. A
    resume of the token on A must not bring A's stale copy back: the ended session left a
    tombstone, and A lets its copy go."""
    await ready(pair, admin)
    a, b = pair.a, pair.b
    conn1, token, _sid = await start_session(a)
    final1, _cut = await first_utterance(conn1)
    await hold_takeovers(admin, "hub-a")
    try:
        conn1.vanish()
        conn2, resumed = await resume_on(b, token, 1, at(final1["end"]))
        assert resumed["type"] == "session.resumed", resumed
        await conn2.send_audio(resumed["resume_from_bytes"], len(PCM), pace=8.0)
        await conn2.ws.send_json({"type": "session.end"})
        await conn2.wait(lambda e: e["type"] == "session.closed", 90, "session.closed on B")
        check_story([final1, *conn2.finals()])
        await conn2.close()

        await release_takeovers(admin, "hub-a")  # what A missed stays missed
        conn3, answer = await resume_on(a, token, len(SEGMENTS), len(PCM))
        assert answer["type"] == "error" and answer["code"] == "resume_failed", answer
        assert answer["fatal"] is False
        await conn3.close()

        async def tombstone() -> bool:
            return bool(await admin.hget(f"asrhub:resume:{token}", "gone") == b"1")

        await until(tombstone, 10, "the ended session's tombstone")
        ttl = await admin.pttl(f"asrhub:resume:{token}")
        assert 0 < ttl <= (60 + LEASE_S) * 1000, ttl
    finally:
        await release_takeovers(admin, "hub-a", wait=False)
    await settle(pair, admin, "tombstone")


async def test_a_resume_reaching_a_stale_copy_after_a_flush_continues_the_real_session(
    pair: Pair, admin: RedisClient
) -> None:
    """A runs the session; the client moves to B (A misses the takeover and is paused), gets
    final 2 there and vanishes again. Redis is flushed (no node sees an outage) while B is
    paused, then the client resumes on A, which finds the record missing and re-creates it from
    its stale copy (it never saw final 2). A must not answer from that copy: its re-created
    record is provisional, B (running again once Redis's log shows A's check) re-creates its own
    with the higher epoch within that time, and A then continues B's session from B's record —
    final 2 is not transcribed twice."""
    await ready(pair, admin)
    a, b = pair.a, pair.b
    conn1, token, _sid = await start_session(a)
    final1, _cut = await first_utterance(conn1)
    await hold_takeovers(admin, "hub-a")
    pause(a)
    try:
        conn1.vanish()
        conn2, resumed = await resume_on(b, token, 1, at(final1["end"]))
        assert resumed["type"] == "session.resumed", resumed
        await conn2.send_audio(resumed["resume_from_bytes"], at(SEGMENTS[2]["start"] + 1.0))
        final2 = await conn2.wait(lambda e: e["type"] == "transcript.final", 60, "final 2 on B")
        assert final2["segment_id"] == 2, final2
        conn2.vanish()
        owner_b = (await admin.hget(f"asrhub:resume:{token}", "owner") or b"").decode()
        pause(b)
        try:
            await admin.flushall()
            flushed = time.monotonic()
            resume_process(a)
            # A may publish again (its own claims); the takeover it missed stays missed.
            await release_takeovers(admin, "hub-a")
            await admin.config_set("slowlog-log-slower-than", 0)  # Redis logs every command
            await admin.slowlog_reset()
            resuming = asyncio.create_task(resume_on(a, token, 2, at(final2["end"])))
            check = hashlib.sha1(cluster_resume.CHECK.encode()).hexdigest()

            async def a_asked() -> bool:
                """A asked Redis about the record for this resume and re-created it (its own
                renewal may have re-created it first) — while B could not speak."""
                if resuming.done():  # answered while B could not speak: from the stale copy
                    return True
                asked = any(
                    _command(e)[:4] == ["EVALSHA", check, "1", f"asrhub:resume:{token}"]
                    for e in await admin.slowlog_get(1000)
                )
                owner = await admin.hget(f"asrhub:resume:{token}", "owner")
                return asked and owner is not None and owner.decode() != owner_b

            await until(a_asked, 20, "A to check its stale copy and re-create the record")
        finally:
            resume_process(b)
            await admin.config_set("slowlog-log-slower-than", 10_000)
        conn3, answer = await resuming
        FIGURES["resume_after_flush_s"] = round(time.monotonic() - flushed, 2)
        assert answer["type"] == "session.resumed", answer
        assert answer["resume_from_bytes"] >= at(final2["end"]), (answer, final2)
        await conn3.send_audio(answer["resume_from_bytes"], len(PCM), pace=8.0)
        await conn3.ws.send_json({"type": "session.end"})
        closed = await conn3.wait(lambda e: e["type"] == "session.closed", 90, "session.closed on A")
        assert closed["reason"] == "end", closed
        check_story([final1, final2, *conn3.finals()])
        await conn3.close()
    finally:
        resume_process(a)
        await release_takeovers(admin, "hub-a", wait=False)
    await settle(pair, admin, "flush")


async def test_a_malformed_token_never_reaches_a_key_name(pair: Pair, admin: RedisClient) -> None:
    """A token with ``:log`` appended would name the session's log list: the claim script then
    failed with WRONGTYPE and the node logged "redis unavailable". Now it is refused before
    Redis: ``resume_failed`` naming the format, nothing in Redis touched, no outage logged."""
    await ready(pair, admin)
    conn1, token, _sid = await start_session(pair.b)
    await first_utterance(conn1)  # the session's log list exists
    await until(lambda: admin.exists(f"asrhub:resume:{token}:log"), 10, "the session's log in Redis")
    log_before = len(log_text(pair.a))
    answers = []
    for bad in (f"{token}:log", token + "x", "../" + token[3:], "*"):
        conn, answer = await resume_on(pair.a, bad, 0, 0)
        answers.append(answer)
        await conn.close()
    logged = log_text(pair.a)[log_before:]
    assert "redis unavailable" not in logged, logged[-2000:]
    for answer in answers:
        assert answer["type"] == "error" and answer["code"] == "resume_failed", answer
        assert "malformed resume token" in answer["message"], answer
    assert await admin.llen(f"asrhub:resume:{token}:log") >= 1
    await conn1.ws.send_json({"type": "session.end"})
    await conn1.wait(lambda e: e["type"] == "session.closed", 60, "session.closed")
    await conn1.close()
    await settle(pair, admin, "malformed_token")


# ---------------------------------------------------------------------------------- coalescing


class Connection:
    """The connection side of a resumable session, as a transport is (``Owner``)."""

    def __init__(self) -> None:
        self.handed_over_calls = 0

    def handed_over(self) -> None:
        self.handed_over_calls += 1


async def test_a_burst_of_session_updates_is_one_fenced_write(pair: Pair, admin: RedisClient) -> None:
    """400 ``session.update``s in one go (as fast as a client can send them) queued 400 record
    rewrites before; now one rewrite waits per session and takes the latest config when it is
    sent. Counted by Redis itself (its slow log records every command), in-process hub."""
    cluster = Cluster(ClusterSettings(redis_url=pair.redis.url, lease_s=LEASE_S), Limits())
    hub = Hub(
        providers={},
        pipeline_factory=build_pipeline,
        default_provider="none",
        limits=Limits(resume_window_s=60),
        cluster=cluster,
    )
    await hub.start()
    sha = hashlib.sha1(cluster_resume.RECONFIGURE.encode()).hexdigest()
    await admin.config_set("slowlog-log-slower-than", 0)
    await admin.config_set("slowlog-max-len", 100_000)
    try:
        session = hub.open({"provider": "none", "audio": AUDIO})
        updated: list[SessionUpdated] = []
        session.events.subscribe(lambda e: isinstance(e, SessionUpdated) and updated.append(e))
        owner = Connection()
        held = hub.resumes.register(session, None, owner, position=pcm_position(session.config))
        await cluster.writer.flushed()
        await admin.slowlog_reset()
        languages = ["en", "de", "fr", "es"]
        for burst, last in ((0, "de"), (1, "fr")):
            for i in range(199):
                hub.update(session, {"language": languages[(i + burst) % 4]})
            hub.update(session, {"language": last})
            await cluster.writer.flushed()
            config = json.loads(await admin.hget(f"asrhub:resume:{held.token}", "config") or b"{}")
            assert config["language"] == last, config  # the latest config wins
        assert len(updated) == 400  # every update still reaches the client, in order
        assert updated[-1].config["language"] == "fr"
        entries = await admin.slowlog_get(100_000)
        writes = [e for e in entries if _command(e)[:2] == ["EVALSHA", sha]]
        FIGURES["record_rewrites_for_400_updates"] = len(writes)
        assert len(writes) == 2, len(writes)  # one per burst
        assert owner.handed_over_calls == 0
        session.close("test")
        hub.resumes.forget(held, owner)
        await cluster.writer.flushed()
    finally:
        await admin.config_set("slowlog-log-slower-than", 10_000)
        await hub.shutdown(grace_s=5)
    assert not hub.sessions and len(hub.resumes) == 0


def _command(entry: dict[str, Any]) -> list[str]:
    args = entry.get("command", b"")
    text = args.decode() if isinstance(args, bytes) else str(args)
    return text.split(" ")


@pytest.fixture(autouse=True)
def _no_paused_node(pair: Pair) -> Iterator[None]:
    """Whatever a case does, no node stays paused after it."""
    yield
    for node in pair.nodes():
        resume_process(node)
