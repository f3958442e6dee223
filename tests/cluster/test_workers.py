"""``asrhub serve --workers 2``: two processes on one port (SO_REUSEPORT), one /metrics for both,
SIGTERM drains both. Real server subprocess, real aiohttp clients, VAD-only sessions."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.audio_utils import fixture, load_wav, pcm16_bytes

from .conftest import Node, Redis, healthz, until

SESSIONS = 12


def active_sessions(text: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "asrhub_sessions_active":
            total += sum(s.value for s in family.samples if s.labels.get("transport") == "websocket")
    return total


async def test_two_workers_share_the_port_and_one_scrape_shows_both() -> None:
    node = Node("workers", {}, ("--workers", "2", "--default-provider", "none", "--log-level", "warning"))
    node.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, node.wait_ready)
        assert any(line.startswith("asrhub: 2 workers") for line in node.lines)
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection (and worker) per request
        async with aiohttp.ClientSession(connector=connector) as http:
            pids: set[int] = set()

            async def both_workers_answered() -> bool:
                health = await healthz(http, node.url)
                if health is not None:
                    assert health["status"] == "ok"
                    pids.add(health["pid"])
                return len(pids) == 2

            await until(both_workers_answered, 60, "both workers to answer /healthz", every=0.01)

            samples, _rate = load_wav(fixture("quick_fox.wav"))
            audio = pcm16_bytes(samples)
            sockets = []
            for _ in range(SESSIONS):
                ws = await http.ws_connect(f"{node.url.replace('http', 'ws')}/v1/stream")
                await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
                started = json.loads((await ws.receive()).data)
                assert started["type"] == "session.started"
                sockets.append(ws)
            for ws in sockets:
                await ws.send_bytes(audio)

            async def scrape_counts_all() -> bool:
                async with http.get(f"{node.url}/metrics") as r:
                    return active_sessions(await r.text()) == SESSIONS

            # Whichever worker answers, the scrape sums both (workers sync every second).
            for _ in range(4):
                await until(scrape_counts_all, 30, f"/metrics to show {SESSIONS} sessions")
            per_worker: dict[int, int] = {}

            async def sessions_on_both_workers() -> bool:
                health = await healthz(http, node.url)
                if health is not None:
                    per_worker[health["pid"]] = health["sessions"]
                return len(per_worker) == 2 and sum(per_worker.values()) == SESSIONS

            # The kernel spread the 12 connections (all on one worker: p = 2^-11).
            await until(sessions_on_both_workers, 30, "/healthz of both workers", every=0.01)
            assert all(per_worker.values()), per_worker

            # SIGTERM the supervisor: every session (on either worker) is flushed and closed.
            loop = asyncio.get_running_loop()
            exit_code = loop.run_in_executor(None, node.terminate)
            for ws in sockets:
                kinds = []
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        kinds.append(json.loads(msg.data)["type"])
                assert kinds[-1] == "session.closed", kinds
                assert "vad.speech_started" in kinds
            assert await exit_code == 0
    finally:
        node.close()


async def test_sigterm_turns_healthz_503_before_the_port_closes() -> None:
    """``server.drain_notice_s``: on SIGTERM the node first answers /healthz 503 and refuses new
    sessions (a balancer takes it out of rotation), then drains its open session as before."""
    env = {"ASRHUB_SERVER__DRAIN_NOTICE_S": "3"}
    node = Node("drain", env, ("--default-provider", "none", "--log-level", "warning"))
    node.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, node.wait_ready)
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{node.url.replace('http', 'ws')}/v1/stream")
            await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            assert json.loads((await ws.receive()).data)["type"] == "session.started"
            assert node.proc is not None
            node.proc.send_signal(15)
            statuses: list[int] = []

            async def draining() -> bool:
                async with http.get(f"{node.url}/healthz") as r:
                    statuses.append(r.status)
                    return r.status == 503 and (await r.json())["status"] == "draining"

            await until(draining, 10, "/healthz to answer 503")
            late = await http.ws_connect(f"{node.url.replace('http', 'ws')}/v1/stream")
            await late.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            refused = json.loads((await late.receive()).data)
            assert refused["type"] == "error" and refused["code"] == "capacity", refused
            await late.close()
            kinds = [json.loads(m.data)["type"] async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
            assert kinds[-1] == "session.closed"
        assert await asyncio.get_running_loop().run_in_executor(None, node.proc.wait, 60) == 0
    finally:
        node.close()


async def test_workers_with_redis_share_limits_and_resume(redis_server: Redis) -> None:
    """Two workers on one port with Redis: max_sessions holds across both, and a dropped
    resumable session resumes whichever worker the reconnect reaches."""
    from tests.reliability.harness import RawWS

    env = {
        "ASRHUB_CLUSTER__REDIS_URL": redis_server.url,
        "ASRHUB_CLUSTER__KEY_PREFIX": "workers-test",
        "ASRHUB_LIMITS__MAX_SESSIONS": "4",
    }
    node = Node(
        "workers-redis", env, ("--workers", "2", "--default-provider", "none", "--log-level", "warning")
    )
    node.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, node.wait_ready)
        open_ws = []
        for _ in range(4):
            ws = await RawWS.connect(node.port)
            await ws.send_json({"type": "session.start", "config": {"provider": "none"}, "resume": True})
            started = await ws.recv_json()
            assert started["type"] == "session.started", started
            open_ws.append((ws, started["resume_token"]))
        fifth = await RawWS.connect(node.port)
        await fifth.send_json({"type": "session.start", "config": {"provider": "none"}})
        refused = await fifth.recv_json()
        assert refused["type"] == "error" and refused["code"] == "capacity", refused
        await fifth.close()
        # Drop the four and resume each on a new connection: some land on the other worker.
        for ws, token in open_ws:
            await ws.send_bytes(bytes(3200))
            await ws.send_json({"type": "ping", "id": 1})
            await ws.events_until(lambda e: e["type"] == "pong")
            ws.reset()
            ws.writer.close()
            again = await RawWS.connect(node.port)
            await again.send_json({"type": "session.resume", "token": token, "last_segment_id": None})
            resumed = await again.recv_json()
            assert resumed["type"] == "session.resumed", resumed
            assert resumed["resume_from_bytes"] in (0, 3200)  # same worker: 3200; the other: 0
            await again.close()
    finally:
        node.close()


async def test_http_sessions_reach_their_worker_on_any_connection() -> None:
    """``--workers 2`` without Redis: an SSE session's follow-up requests and a Socket.io
    long-polling client's requests, each on a new TCP connection (so the kernel picks a worker
    for each), all reach the worker that holds the session — forwarded over its private port.
    Before, a request that landed on the other worker got 404 (about half of them)."""
    import socketio

    from tests.reliability.harness import pcm_of

    node = Node(
        "workers-routes", {}, ("--workers", "2", "--default-provider", "none", "--log-level", "warning")
    )
    node.start()
    try:
        await asyncio.get_running_loop().run_in_executor(None, node.wait_ready)
        audio = pcm_of("quick_fox.wav")
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection (and worker) per request
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.post(f"{node.url}/v1/sessions", json={"config": {"provider": "none"}}) as r:
                assert r.status == 201
                sid = (await r.json())["session_id"]
            assert sid.rsplit(".w", 1)[1] in ("0", "1")  # named after its worker
            statuses = []
            for i in range(0, len(audio), 3200):
                async with http.post(f"{node.url}/v1/sessions/{sid}/audio", data=audio[i : i + 3200]) as r:
                    statuses.append(r.status)
            async with http.post(
                f"{node.url}/v1/sessions/{sid}/update", json={"config": {"language": "en"}}
            ) as r:
                statuses.append(r.status)
            assert statuses == [204] * (len(statuses) - 1) + [200], statuses
            async with http.get(f"{node.url}/v1/sessions/{sid}/events") as events:
                assert events.status == 200
                async with http.post(f"{node.url}/v1/sessions/{sid}/end") as r:
                    assert r.status == 200 and (await r.json())["reason"] == "end"
                kinds = [
                    line.decode().split(": ", 1)[1].strip()
                    async for line in events.content
                    if line.startswith(b"event: ")
                ]
            assert kinds[0] == "session.started" and "vad.speech_started" in kinds
            assert kinds[-1] == "session.closed", kinds

            for transports in (["polling"], ["polling", "websocket"]):  # long-polling, then its upgrade
                client = socketio.AsyncClient(reconnection=False, http_session=http)
                got: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
                for kind in ("session.started", "vad.speech_started", "session.closed", "error"):
                    client.on(kind, lambda data, kind=kind, got=got: got.put_nowait((kind, data)))
                await client.connect(node.url, transports=transports)
                if "websocket" in transports:  # the upgrade (on a new connection) got through
                    await until(functools.partial(_is_websocket, client), 30, "the upgrade", every=0.05)
                await client.emit("session.start", {"config": {"provider": "none"}})
                assert (await asyncio.wait_for(got.get(), 30))[0] == "session.started"
                for i in range(0, len(audio), 16000):
                    await client.emit("audio", audio[i : i + 16000])
                await client.emit("session.end", {})
                seen = []
                while not seen or seen[-1] != "session.closed":
                    seen.append((await asyncio.wait_for(got.get(), 30))[0])
                assert "vad.speech_started" in seen and "error" not in seen, seen
                await client.disconnect()
    finally:
        node.close()


async def _is_websocket(client: Any) -> bool:
    return bool(client.transport() == "websocket")
