"""``session.update`` (live reconfiguration) on every transport: WebSocket, Socket.io and the
HTTP control endpoint of SSE sessions, against a real hub server (tiny.en).

The same utterance — made-up names the model misses — is sent twice; between the two, an
update adds them as key terms. The first final misses them, the second has them: the update
holds from the next utterance on, in stream order, with no waiting in the client. A refused
update (a field that cannot change mid-stream) is a ``bad_message`` error naming it, and the
session goes on.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.audio_utils import normalize_text

from .conftest import ServerThread, frames, speech
from .test_socketio import Recorder
from .test_sse import AUTH, post_audio, read_sse

QUIET = b"\0\0" * 24_000
"""1.5 s of silence after the speech: the VAD closes the utterance before the update arrives."""
TERMS = ["Vortalix", "Nakashima"]
START = {"language": "en", "partials": False}
UPDATE = {"type": "session.update", "config": {"keyterms": TERMS, "vad": {"silence_ms": 400}}}
REFUSED = {
    "type": "session.update",
    "config": {"audio": {"sample_rate": 8000}, "wakeword": {"enabled": True}},
}


def check(events: list[dict[str, Any]]) -> None:
    types = [e["type"] for e in events]
    assert types[0] == "session.started" and types[-1] == "session.closed", types
    updated = [e for e in events if e["type"] == "session.updated"]
    assert len(updated) == 1, types
    config = updated[0]["config"]
    assert config["keyterms"] == TERMS and config["vad"]["silence_ms"] == 400 and config["language"] == "en"
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["code"] == "bad_message" and not errors[0]["fatal"]
    assert "audio, wakeword" in errors[0]["message"], errors[0]["message"]
    first, second = [normalize_text(e["text"]) for e in events if e["type"] == "transcript.final"]
    assert "vortalix" not in first, first
    assert "vortalix" in second and "nakashima" in second, second


async def test_websocket(whisper_server: ServerThread) -> None:
    pcm, _ = speech("keyterms.wav")
    async with aiohttp.ClientSession() as http, http.ws_connect(whisper_server.ws, headers=AUTH) as ws:
        await ws.send_str(json.dumps(UPDATE))  # before session.start: refused, connection lives
        early = await ws.receive_json()
        assert (
            early["type"] == "error"
            and early["code"] == "bad_message"
            and "session.start" in early["message"]
        )
        await ws.send_str(json.dumps({"type": "session.start", "config": START}))
        for frame in frames(pcm + QUIET):
            await ws.send_bytes(frame)
        await ws.send_str(json.dumps(REFUSED))
        await ws.send_str(json.dumps(UPDATE))
        for frame in frames(pcm + QUIET):
            await ws.send_bytes(frame)
        await ws.send_str(json.dumps({"type": "session.end"}))
        events = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
    check(events)


async def test_socketio(whisper_server: ServerThread) -> None:
    pcm, _ = speech("keyterms.wav")
    client = Recorder()
    client.sio.on("session.updated", client._handler("session.updated"))
    await client.connect(whisper_server.http)
    try:
        await client.sio.emit("session.start", {"type": "session.start", "config": START})
        for frame in frames(pcm + QUIET):
            await client.sio.emit("audio", frame)
        await client.sio.emit("session.update", REFUSED)
        await client.sio.emit("session.update", {"config": UPDATE["config"]})  # type from the event name
        for frame in frames(pcm + QUIET):
            await client.sio.emit("audio", frame)
        await client.sio.emit("session.end", {"type": "session.end"})
        await client.wait_for("session.closed", within_s=120)
    finally:
        await client.sio.disconnect()
    check(client.events)


async def test_sse_control_endpoint(whisper_server: ServerThread) -> None:
    base = whisper_server.http
    pcm, _ = speech("keyterms.wav")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/sessions", json={"config": START}, headers=AUTH) as resp:
            assert resp.status == 201
            sid = (await resp.json())["session_id"]
        events: list[dict[str, Any]] = []

        async def subscribe() -> None:
            async with http.get(f"{base}/v1/sessions/{sid}/events", headers=AUTH) as resp:
                async for event in read_sse(resp):
                    events.append(event)

        reader = asyncio.create_task(subscribe())
        await post_audio(http, base, sid, pcm + QUIET)
        async with http.post(f"{base}/v1/sessions/{sid}/update", json=REFUSED, headers=AUTH) as resp:
            refused = await resp.json()
            assert (
                resp.status == 400
                and refused["code"] == "bad_message"
                and "audio, wakeword" in refused["message"]
            )
        async with http.post(f"{base}/v1/sessions/{sid}/update", json=UPDATE, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["config"]["keyterms"] == TERMS
        await post_audio(http, base, sid, pcm + QUIET)
        async with http.post(f"{base}/v1/sessions/{sid}/end", headers=AUTH) as resp:
            assert resp.status == 200
        await asyncio.wait_for(reader, 60)
        async with http.post(f"{base}/v1/sessions/{sid}/update", json=UPDATE, headers=AUTH) as resp:
            assert resp.status == 404  # the session is gone
    # The refusal was the HTTP answer, not an event: add it where check() expects it.
    check([*events[:-1], {"type": "error", **refused}, events[-1]])
