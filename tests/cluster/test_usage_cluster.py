"""Usage metering across a cluster: two ``asrhub serve`` nodes sharing one real
``redis-server`` count one key's audio, sessions and requests into one total, and the key's
daily quota holds across them — a session on the second node stops where the audio of both
nodes together reaches it (provider ``none``: VAD only, so no model is loaded)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from asrhub.door.keys import fingerprint
from tests.audio_utils import fixture, load_wav, pcm16_bytes

from .conftest import Node, Redis, start_nodes, until

KEY = "cluster-usage-key"
QUOTA_S = 5.0
WAIT = 60.0


@pytest.fixture(scope="module")
def nodes(redis_server: Redis) -> Iterator[list[Node]]:
    env = {
        "ASRHUB_CLUSTER__REDIS_URL": redis_server.url,
        "ASRHUB_DEFAULT_PROVIDER": "none",
        "ASRHUB_API_KEYS": KEY,
        "ASRHUB_LIMITS__KEY_AUDIO_SECONDS_PER_DAY": str(QUOTA_S),
        "ASRHUB_METRICS__OPERATOR_SAMPLE": "0",
    }
    started = [Node(f"usage{i}", env) for i in (1, 2)]
    try:
        start_nodes(started)
        yield started
    finally:
        for node in started:
            node.close()


def pcm(name: str) -> bytes:
    samples, rate = load_wav(fixture(name))
    assert rate == 16_000
    return pcm16_bytes(samples)


async def usage(node: Node) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{node.url}/v1/usage", headers={"Authorization": f"Bearer {KEY}"}) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def session(node: Node, audio: bytes) -> list[dict[str, Any]]:
    ws_url = node.url.replace("http", "ws", 1) + "/v1/stream"
    events: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, headers={"Authorization": f"Bearer {KEY}"}) as ws,
    ):
        await ws.send_str(json.dumps({"type": "session.start", "config": {}}))

        async def read() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    events.append(json.loads(msg.data))

        def over() -> bool:  # stop sending once the session closed (see tests/transports/test_usage.py)
            return ws.closed or any(e["type"] == "session.closed" or e.get("fatal") for e in events)

        reader = asyncio.create_task(read())
        try:
            for i in range(0, len(audio), 3200):
                await asyncio.sleep(0)  # the reader's turn
                if over():
                    break
                await ws.send_bytes(audio[i : i + 3200])
            if not over():
                await ws.send_str(json.dumps({"type": "session.end"}))
        except ConnectionResetError:
            pass
        await asyncio.wait_for(reader, WAIT)
    return events


async def test_two_nodes_count_into_one_total_and_share_the_quota(nodes: list[Node]) -> None:
    one, two = nodes
    fox = pcm("quick_fox.wav")  # 3.35 s, within the quota
    events = await session(one, fox)
    assert events[-1] == {"type": "session.closed", "reason": "end"}

    async def seen_on_two() -> dict[str, Any] | None:
        found = await usage(two)
        return found if found["audio_seconds"] > 0 else None

    shared = await until(seen_on_two, WAIT, "node 2 to see node 1's audio")
    assert shared["scope"] == "cluster" and shared["key_id"] == fingerprint(KEY)
    assert shared["audio_seconds"] == pytest.approx(len(fox) / 32_000, abs=0.001)
    assert shared["sessions"] == 1 and shared["requests"] == 1

    events = await session(two, pcm("weather_question.wav"))  # 3.39 s: only 1.65 s are left
    assert [e["type"] for e in events][-2:] == ["error", "session.closed"]
    assert events[-2]["code"] == "quota_exceeded" and events[-1]["reason"] == "quota_exceeded"

    async def settled() -> dict[str, Any] | None:
        found = await usage(one)
        return found if found["sessions"] == 2 and found["audio_seconds"] >= QUOTA_S - 0.001 else None

    total = await until(settled, WAIT, "node 1 to see node 2's session")
    assert total["audio_seconds"] == pytest.approx(QUOTA_S, abs=0.001)  # both nodes, to the quota
    assert total["requests"] == 2 and total["total"]["audio_seconds"] == pytest.approx(QUOTA_S, abs=0.001)
    assert total["quota"]["audio_seconds_remaining"] == 0.0
    assert await usage(two) == total

    refused = await session(one, bytes(3200))  # node 1 learns the total at the open
    assert refused[0]["code"] == "quota_exceeded" and refused[0]["fatal"] is True
