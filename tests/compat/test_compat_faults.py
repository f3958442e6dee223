"""Fatal errors end a compatible stream in its API's own shape: the hub's idle timeout on a
VAD-only hub (provider ``none``: no model loaded), answered as Deepgram and OpenAI clients
expect it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest

from tests.transports.conftest import KEY, ServerThread, make_settings

WAIT = 60.0


@pytest.fixture(scope="module")
def idle_server() -> Iterator[ServerThread]:
    with ServerThread(make_settings(provider="none", limits={"idle_timeout_s": 0.5})) as server:
        yield server


async def test_deepgram_idle_timeout_error_metadata_close(idle_server: ServerThread) -> None:
    url = f"ws://127.0.0.1:{idle_server.port}/v1/listen?encoding=linear16&sample_rate=16000"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}) as ws:
            await ws.send_bytes(bytes(3200))  # 100 ms, then nothing
            messages = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
            assert ws.close_code == 1011
    error, metadata = messages[-2:]
    assert error["type"] == "Error" and error["variant"] == "timeout" and error["description"]
    assert metadata["type"] == "Metadata" and abs(metadata["duration"] - 0.1) < 0.01
    assert idle_server.open_sessions() == 0


async def test_openai_realtime_idle_timeout_error_close(idle_server: ServerThread) -> None:
    url = f"ws://127.0.0.1:{idle_server.port}/v1/realtime?intent=transcription"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={"Authorization": f"Bearer {KEY}"}) as ws:
            append = {"type": "input_audio_buffer.append", "audio": "AAAAAAAAAAAAAAAAAAAAAA=="}
            await ws.send_str(json.dumps(append))
            messages = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
            assert ws.close_code == 1011
    assert messages[0]["type"] == "session.created"
    error = messages[-1]
    assert error["type"] == "error" and error["error"]["code"] == "timeout"
    assert error["error"]["type"] == "invalid_request_error" and error["event_id"]
    assert idle_server.open_sessions() == 0


async def test_graceful_shutdown_ends_a_deepgram_stream_with_metadata() -> None:
    """SIGTERM-style shutdown while a Deepgram stream is open: the hub flushes the session, the
    stream gets its Metadata and a clean close, nothing is left open."""
    server = ServerThread(make_settings(provider="none"))
    with server:
        url = f"ws://127.0.0.1:{server.port}/v1/listen?encoding=linear16&sample_rate=16000"
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}) as ws:
                await ws.send_bytes(bytes(6400))
                stopping = asyncio.create_task(asyncio.to_thread(server.stop))
                messages = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
                await stopping
        assert messages[-1]["type"] == "Metadata" and abs(messages[-1]["duration"] - 0.2) < 0.01
        assert ws.close_code in (1000, 1001)
        assert not server.hub.sessions
