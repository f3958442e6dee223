"""API keys (no key, wrong key, right key) on every transport, browser origins, and the
connection limits: per-key and total sessions, idle timeout, heartbeat, upload size."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
import socketio

from tests.audio_utils import fixture, fixture_entry, wer

from .conftest import KEY, OTHER_KEY, ServerThread, make_settings

WRONG = "not-a-key"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    settings = make_settings(
        keys=(KEY, OTHER_KEY),
        server={
            "heartbeat_s": 0.5,
            "max_upload_bytes": 200_000,
            "allowed_origins": ("http://allowed.example",),
        },
        limits={"max_sessions": 4, "max_sessions_per_key": 2, "idle_timeout_s": 1.5},
    )
    with ServerThread(settings) as srv:
        yield srv


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The code of the close frame the hub sends next (what it sent, whatever the race of the
    closing handshake does to ``ws.close_code``)."""
    msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE, msg
    return int(msg.data)


async def settle(server: ServerThread) -> None:
    """Wait until sessions of earlier tests (closed by their disconnects) are gone."""
    for _ in range(100):
        if server.open_sessions() == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("sessions left open")


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


# ------------------------------------------------------------------ WebSocket


@pytest.mark.parametrize("how", ["none", "wrong-header", "wrong-token"])
async def test_websocket_refuses_missing_or_wrong_keys(server: ServerThread, how: str) -> None:
    headers = bearer(WRONG) if how == "wrong-header" else {}
    params = {"token": WRONG} if how == "wrong-token" else {}
    opened = server.call(lambda: server.hub.opened_total)
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.ws, headers=headers, params=params) as ws,
    ):
        await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
        await ws.send_bytes(bytes(3200))
        error = await ws.receive_json()
        assert error["type"] == "error" and error["code"] == "unauthorized" and error["fatal"] is True
        assert error["message"]
        assert await closed_with(ws) == 4401
    assert server.call(lambda: server.hub.opened_total) == opened  # no session, no audio taken


@pytest.mark.parametrize("how", ["header", "token"])
async def test_websocket_accepts_the_right_key(server: ServerThread, how: str) -> None:
    headers, params = (bearer(OTHER_KEY), {}) if how == "header" else ({}, {"token": OTHER_KEY})
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.ws, headers=headers, params=params) as ws,
    ):
        await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
        assert (await ws.receive_json())["type"] == "session.started"
        await ws.send_str('{"type": "session.end"}')
        assert (await ws.receive_json())["type"] == "session.closed"


# ------------------------------------------------------------------ Socket.io


@pytest.mark.parametrize("token", [None, WRONG])
async def test_socketio_refuses_missing_or_wrong_keys(server: ServerThread, token: str | None) -> None:
    client = socketio.AsyncClient(reconnection=False)
    refused: list[Any] = []
    client.on("connect_error", lambda data: refused.append(data))
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(server.http, auth={"token": token} if token else None, transports=["websocket"])
    assert refused and refused[0]["data"]["type"] == "error" and refused[0]["data"]["code"] == "unauthorized"
    assert refused[0]["message"]
    assert server.open_sessions() == 0
    await client.disconnect()


async def test_socketio_accepts_the_right_key(server: ServerThread) -> None:
    client = socketio.AsyncClient(reconnection=False)
    started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    client.on("session.started", lambda data: started.done() or started.set_result(data))
    await client.connect(server.http, auth={"token": KEY}, transports=["websocket"])
    await client.emit("session.start", {"type": "session.start", "config": {"provider": "none"}})
    assert (await asyncio.wait_for(started, 5))["config"]["provider"] == "none"
    await client.disconnect()


# ------------------------------------------------------------------ HTTP


PROTECTED = [
    ("POST", "/v1/sessions", None),
    ("POST", "/v1/sessions/abc/audio", b"\0\0"),
    ("POST", "/v1/sessions/abc/end", None),
    ("POST", "/v1/sessions/abc/update", b"{}"),
    ("DELETE", "/v1/sessions/abc", None),
    ("GET", "/v1/sessions/abc/events", None),
    ("POST", "/v1/transcribe", b"RIFF"),
    ("POST", "/v1/audio/transcriptions", b"RIFF"),
    ("POST", "/v1/audio/transcriptions?stream=true", b"RIFF"),
    ("POST", "/v1/audio/translations", b"RIFF"),
    ("GET", "/v1/models", None),
    ("GET", "/v1/jobs/abc", None),
    ("POST", "/v1/listen", b"RIFF"),
    ("POST", "/v1/listen?fetch_urls=true", b'{"url": "http://127.0.0.1:1/x.wav"}'),
    ("GET", "/v1/listen", None),
    ("GET", "/v1/stream", None),
    ("GET", "/v1/realtime?intent=transcription", None),
    ("GET", "/metrics", None),
]

UPGRADE_HEADERS = [
    {},
    {"Upgrade": "websocket"},
    {"Upgrade": "websocket", "Connection": "Upgrade"},
    {  # a whole handshake: refused in-band only on a WebSocket route's GET (not these requests)
        "Upgrade": "websocket",
        "Connection": "keep-alive, Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    },
]
"""A WebSocket's headers switched the key check off on plain HTTP requests once (issue 22)."""
WEBSOCKET_PATHS = ("/v1/stream", "/v1/listen", "/v1/realtime")


def _json_error(path: str, body: Any) -> dict[str, Any]:
    if path.startswith(("/v1/audio", "/v1/models", "/v1/realtime")):
        return dict(body["error"])
    if path.startswith("/v1/listen"):
        code = "unauthorized" if body["err_code"] == "INVALID_AUTH" else body["err_code"]
        return {"code": code, "message": body["err_msg"]}
    return dict(body)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
async def test_http_endpoints_need_a_key(
    server: ServerThread, method: str, path: str, body: bytes | None
) -> None:
    """Every protected route refuses a request without a valid key, whatever WebSocket headers
    it carries, and serves nothing (no session opened)."""
    opened = server.call(lambda: server.hub.opened_total)
    async with aiohttp.ClientSession() as http:
        for upgrade in UPGRADE_HEADERS:
            if method == "GET" and path.startswith(WEBSOCKET_PATHS) and "Sec-WebSocket-Key" in upgrade:
                continue  # a real handshake: the next test
            for key_headers, params in (({}, {}), (bearer(WRONG), {}), ({}, {"token": WRONG})):
                headers = {**key_headers, **upgrade}
                async with http.request(
                    method, server.http + path, data=body, headers=headers, params=params
                ) as resp:
                    assert resp.status == 401, (path, headers)
                    scheme = "Token" if path.startswith("/v1/listen") else "Bearer"  # Deepgram's
                    assert resp.headers["WWW-Authenticate"] == scheme
                    error = _json_error(path, await resp.json())
                    assert error["code"] == "unauthorized" and error["message"]
        async with http.request(method, server.http + path, data=body, headers=bearer(KEY)) as resp:
            assert resp.status != 401
    if path != "/v1/sessions" or method != "POST":
        assert server.call(lambda: server.hub.opened_total) == opened


async def test_websocket_routes_refuse_in_band_only_on_a_real_handshake(server: ServerThread) -> None:
    """The three WebSocket endpoints answer a refused key in their own protocol on a real
    handshake: no session is opened on any of them."""
    opened = server.call(lambda: server.hub.opened_total)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:  # Deepgram refuses at the handshake
            await http.ws_connect(server.http + "/v1/listen?encoding=linear16&sample_rate=16000")
        assert info.value.status == 401
        async with http.ws_connect(server.http + "/v1/realtime?intent=transcription") as ws:
            error = await ws.receive_json()
            assert error["type"] == "error" and error["error"]["code"] == "invalid_api_key"
        async with http.ws_connect(server.ws) as ws:
            assert (await ws.receive_json())["code"] == "unauthorized"
            assert await closed_with(ws) == 4401
    assert server.call(lambda: server.hub.opened_total) == opened


async def test_right_key_works_over_http(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/", "/vendor/socket.io/socket.io.esm.min.js"):  # open to all
            async with http.get(server.http + path) as resp:
                assert resp.status == 200, path
        async with http.get(server.http + "/metrics", headers=bearer(KEY)) as resp:
            assert resp.status == 200 and "asrhub_" in await resp.text()
        async with http.post(
            server.http + "/v1/transcribe",
            data=fixture("quick_fox.wav").open("rb"),
            params={"token": OTHER_KEY},
        ) as resp:
            assert resp.status == 200
            assert wer(fixture_entry("quick_fox.wav")["text"], (await resp.json())["text"]) <= 0.1


def test_openai_sdk_with_wrong_and_right_key(server: ServerThread) -> None:
    with openai.OpenAI(base_url=f"{server.http}/v1", api_key=WRONG, max_retries=0) as wrong:
        with open(fixture("quick_fox.wav"), "rb") as fh, pytest.raises(openai.AuthenticationError) as info:
            wrong.audio.transcriptions.create(model="whisper-1", file=fh)
        assert isinstance(info.value.body, dict) and info.value.body["code"] == "unauthorized"
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
    with openai.OpenAI(base_url=f"{server.http}/v1", api_key=KEY, max_retries=0) as right:
        with open(fixture("quick_fox.wav"), "rb") as fh:
            text = right.audio.transcriptions.create(model="whisper-1", file=fh).text
        assert wer(fixture_entry("quick_fox.wav")["text"], text) <= 0.1
        with open(fixture("long_40s.wav"), "rb") as fh, pytest.raises(openai.APIStatusError) as too_big:
            right.audio.transcriptions.create(model="whisper-1", file=fh)
        assert too_big.value.status_code == 413
        assert isinstance(too_big.value.body, dict) and too_big.value.body["code"] == "too_large"


# ------------------------------------------------------------------ origins


async def test_browser_origins(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(server.ws, headers={"Origin": "http://evil.example", **bearer(KEY)})
        assert info.value.status == 403
        for origin in ("http://allowed.example", server.http):  # listed, and same-origin
            async with http.ws_connect(server.ws, headers={"Origin": origin, **bearer(KEY)}) as ws:
                await ws.send_str('{"type": "ping", "id": 1}')
                assert (await ws.receive_json())["type"] == "pong"
        async with http.post(
            server.http + "/v1/sessions", headers={"Origin": "http://evil.example", **bearer(KEY)}
        ) as r:
            assert r.status == 403 and (await r.json())["code"] == "unauthorized"
        preflight = {
            "Origin": "http://allowed.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        async with http.options(server.http + "/v1/sessions", headers=preflight) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
            assert "authorization" in r.headers["Access-Control-Allow-Headers"]
        async with http.get(
            server.http + "/v1/models", headers={"Origin": "http://allowed.example", **bearer(KEY)}
        ) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "http://allowed.example"
    client = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(
            server.http,
            headers={"Origin": "http://evil.example"},
            auth={"token": KEY},
            transports=["websocket"],
        )
    await client.disconnect()


# ------------------------------------------------------------------ limits


async def open_ws(http: aiohttp.ClientSession, server: ServerThread, key: str) -> tuple[Any, dict[str, Any]]:
    ws = await http.ws_connect(server.ws, headers=bearer(key))
    await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
    return ws, await ws.receive_json()


async def test_capacity_per_key_and_in_total(server: ServerThread) -> None:
    await settle(server)
    async with aiohttp.ClientSession() as http:
        mine = [await open_ws(http, server, KEY) for _ in range(2)]
        assert all(first["type"] == "session.started" for _, first in mine)
        ws, first = await open_ws(http, server, KEY)  # a third for the same key
        assert first["code"] == "capacity" and first["fatal"] and "key" in first["message"]
        assert await closed_with(ws) == 1013
        async with http.post(server.http + "/v1/sessions", headers=bearer(KEY)) as resp:
            assert resp.status == 503 and (await resp.json())["code"] == "capacity"
        theirs = [await open_ws(http, server, OTHER_KEY) for _ in range(2)]  # another key still fits
        assert all(first["type"] == "session.started" for _, first in theirs)
        assert server.open_sessions() == 4
        client = socketio.AsyncClient(reconnection=False)
        errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        client.on("error", errors.put_nowait)
        await client.connect(server.http, auth={"token": OTHER_KEY}, transports=["websocket"])
        await client.emit("session.start", {"config": {"provider": "none"}})
        assert (await asyncio.wait_for(errors.get(), 5))["code"] == "capacity"  # the hub is full
        await client.disconnect()
        for ws, _ in [*mine, *theirs]:
            await ws.close()
        for _ in range(50):
            if server.open_sessions() == 0:
                break
            await asyncio.sleep(0.05)
        ws, first = await open_ws(http, server, KEY)
        assert first["type"] == "session.started"
        await ws.close()


async def test_idle_session_times_out(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        ws, first = await open_ws(http, server, KEY)
        assert first["type"] == "session.started"
        error = await asyncio.wait_for(ws.receive_json(), 5)  # no audio for idle_timeout_s
        assert error["code"] == "timeout" and error["fatal"]
        assert await ws.receive_json() == {"type": "session.closed", "reason": "timeout"}
        assert await closed_with(ws) == 4408


async def test_heartbeat_drops_a_silent_client(server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(server.ws, headers=bearer(KEY), autoping=False)
        await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
        assert (await ws.receive_json())["type"] == "session.started"
        kinds = []
        async with asyncio.timeout(5):
            while not ws.closed:
                msg = await ws.receive()
                kinds.append(msg.type)
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
        assert aiohttp.WSMsgType.PING in kinds  # the hub pinged and got no pong
        await ws.close()
    assert await server.no_sessions()


async def test_heartbeat_resets_a_client_that_reads_nothing(server: ServerThread) -> None:
    """A client that neither reads nor answers pings is cut with a reset (not a polite close
    the kernel would keep retrying for minutes); its session is closed."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            f"GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {KEY}\r\n\r\n".encode()
        )
        start = json.dumps({"type": "session.start", "config": {"provider": "none"}}).encode()
        mask = os.urandom(4)
        sock.sendall(
            bytes([0x81, 0x80 | len(start)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(start))
        )
        await asyncio.sleep(3.0)  # heartbeat_s is 0.5: ping, no pong, cut — and nothing read meanwhile
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass
    assert await server.no_sessions()


async def test_event_stream_keep_alive_comments(server: ServerThread) -> None:
    """An idle event stream carries ``: keep-alive`` comments every heartbeat_s (0.5 s here)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            server.http + "/v1/sessions", json={"config": {"provider": "none"}}, headers=bearer(KEY)
        ) as resp:
            sid = (await resp.json())["session_id"]
        async with http.get(f"{server.http}/v1/sessions/{sid}/events", headers=bearer(KEY)) as resp:
            lines: list[str] = []
            async with asyncio.timeout(5):
                async for raw in resp.content:
                    lines.append(raw.decode().rstrip("\n"))
                    if lines.count(": keep-alive") >= 2:
                        break
        assert lines[0] == "event: session.started"
        async with http.delete(f"{server.http}/v1/sessions/{sid}", headers=bearer(KEY)) as resp:
            assert resp.status == 204
