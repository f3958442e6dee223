"""``asrhub serve --workers 2``: two processes on one port (SO_REUSEPORT), one /metrics for both,
SIGTERM drains both. Real server subprocess, real aiohttp clients, VAD-only sessions."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.audio_utils import fixture, load_wav, pcm16_bytes

from .conftest import Node, healthz, until

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
