"""The WebSocket heartbeat (transports/websocket.py ``StreamSocket``): any bytes from the client
are a sign of life, as in aiohttp — the hub pings one heartbeat after the client's latest bytes,
and bytes after a ping stand for its pong — though no callback runs per received chunk.

Real hub server on 127.0.0.1, real aiohttp client with ``autoping=False`` (it answers no ping
unless the test says so). The test waits on the hub's pings, never on a clock."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest

from .conftest import KEY, ServerThread, make_settings

HEARTBEAT_S = 1.5  # a pong (or any bytes) is awaited for half of it
FRAME = bytes(3200)  # 100 ms of PCM16 silence


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    settings = make_settings(
        provider="none", server={"heartbeat_s": HEARTBEAT_S}, limits={"idle_timeout_s": 60}
    )
    with ServerThread(settings) as srv:
        yield srv


async def next_control(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The next message that is not a hub event (a ping, or the end of the connection)."""
    while True:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return msg


async def test_bytes_after_a_ping_stand_for_its_pong(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws, headers={"Authorization": f"Bearer {KEY}"}, autoping=False)
        await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
        assert (await ws.receive_json())["type"] == "session.started"
        for _ in range(3):
            await ws.send_bytes(FRAME)
        # quiet now: one heartbeat after those bytes the hub pings
        assert (await next_control(ws)).type is aiohttp.WSMsgType.PING
        await ws.send_bytes(FRAME)  # audio, not a pong: the hub must keep the connection
        # ... and ping again one heartbeat after that frame, instead of closing
        assert (await next_control(ws)).type is aiohttp.WSMsgType.PING
        await ws.pong()
        await ws.send_str(json.dumps({"type": "session.end"}))
        events = []
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                events.append(json.loads(msg.data)["type"])
            elif msg.type is aiohttp.WSMsgType.PING:
                await ws.pong()
            else:
                break
        assert events[-1] == "session.closed"
        assert ws.close_code == 1000
    assert await server.no_sessions()


async def test_a_client_that_stops_sending_and_answers_nothing_is_dropped(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws, headers={"Authorization": f"Bearer {KEY}"}, autoping=False)
        await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
        assert (await ws.receive_json())["type"] == "session.started"
        await ws.send_bytes(FRAME)
        assert (await next_control(ws)).type is aiohttp.WSMsgType.PING
        ended = await next_control(ws)  # no pong, no bytes: the hub cuts the connection
        assert ended.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
        await ws.close()
    assert await server.no_sessions()
