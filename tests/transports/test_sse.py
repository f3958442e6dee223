"""HTTP session endpoints + Server-Sent Events, with an SSE reader over aiohttp."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from tests.audio_utils import wer

from .conftest import AUTH, KEY, ServerThread, finals_text, frames, speech


async def read_sse(
    resp: aiohttp.ClientResponse, comments: list[str] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Parse text/event-stream: yields each event's JSON data, with its ``event:`` name checked."""
    name: str | None = None
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                message = json.loads("\n".join(data))
                assert message["type"] == name, "event: carries the message type"
                yield message
            name, data = None, []
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


async def post_audio(http: aiohttp.ClientSession, base: str, sid: str, pcm: bytes, ms: int = 250) -> None:
    for frame in frames(pcm, ms):
        async with http.post(f"{base}/v1/sessions/{sid}/audio", data=frame, headers=AUTH) as resp:
            assert resp.status == 204, await resp.text()


async def test_sse_session_transcribes_fixture_speech(whisper_server: ServerThread) -> None:
    base = whisper_server.http
    pcm, reference = speech("address_time.wav")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/v1/sessions", json={"config": {"language": "en"}}, headers=AUTH
        ) as resp:
            assert resp.status == 201
            created = await resp.json()
        sid = created["session_id"]
        assert created["config"]["provider"] == "whisper"
        events: list[dict[str, Any]] = []

        async def subscribe() -> None:
            async with http.get(f"{base}/v1/sessions/{sid}/events", headers=AUTH) as resp:
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                async for event in read_sse(resp):
                    events.append(event)

        reader = asyncio.create_task(subscribe())
        await post_audio(http, base, sid, pcm)
        async with http.post(f"{base}/v1/sessions/{sid}/end", headers=AUTH) as resp:
            assert resp.status == 200 and (await resp.json())["reason"] == "end"
        await asyncio.wait_for(reader, 30)  # the stream ends after session.closed
        async with http.post(f"{base}/v1/sessions/{sid}/audio", data=b"\0\0", headers=AUTH) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "bad_message"
    assert events[0]["type"] == "session.started" and events[0]["session_id"] == sid
    assert events[-1] == {"type": "session.closed", "reason": "end"}
    assert wer(reference, finals_text(events)) <= 0.1, finals_text(events)


async def test_events_before_the_subscriber_are_kept(whisper_server: ServerThread) -> None:
    """Audio first, event stream later: nothing is lost; one subscriber at a time."""
    base = whisper_server.http
    pcm, reference = speech("quick_fox.wav")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/sessions", headers=AUTH) as resp:  # no body: default config
            sid = (await resp.json())["session_id"]
        await post_audio(http, base, sid, pcm)
        async with http.get(f"{base}/v1/sessions/{sid}/events", params={"token": KEY}) as first:
            async with http.get(f"{base}/v1/sessions/{sid}/events", headers=AUTH) as second:
                assert second.status == 409 and "subscriber" in (await second.json())["message"]
            async with http.post(f"{base}/v1/sessions/{sid}/end", headers=AUTH) as resp:
                assert resp.status == 200
            events = [e async for e in read_sse(first)]
        async with http.get(f"{base}/v1/sessions/{sid}/events", headers=AUTH) as gone:
            assert gone.status == 404
    types = [e["type"] for e in events]
    assert types[0] == "session.started" and types[-1] == "session.closed"
    assert types.index("vad.speech_started") < types.index("transcript.final")
    assert wer(reference, finals_text(events)) <= 0.1


async def test_http_session_errors(whisper_server: ServerThread) -> None:
    base = whisper_server.http
    limit = whisper_server.settings.limits.max_frame_bytes
    async with aiohttp.ClientSession() as http:
        for body in ({"data": {"config": {}}}, {"config": {"vad": {"aggressiveness": 9}}}, {"config": 5}):
            async with http.post(f"{base}/v1/sessions", json=body, headers=AUTH) as resp:
                error = await resp.json()
                assert resp.status == 400 and error["type"] == "error" and error["code"] == "bad_message", (
                    body
                )
        async with http.post(f"{base}/v1/sessions", json={"config": {"provider": "x"}}, headers=AUTH) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "unknown_provider"
        async with http.post(f"{base}/v1/sessions", data="{nope", headers=AUTH) as resp:
            assert resp.status == 400
        async with http.post(f"{base}/v1/sessions", json={}, headers=AUTH) as resp:
            sid = (await resp.json())["session_id"]
        async with http.post(
            f"{base}/v1/sessions/{sid}/audio", data=io.BytesIO(bytes(limit + 1)), headers=AUTH
        ) as resp:
            assert resp.status == 413 and (await resp.json())["code"] == "too_large"
        async with http.post(f"{base}/v1/sessions/nope/audio", data=b"\0\0", headers=AUTH) as resp:
            assert resp.status == 404 and "message" in await resp.json()
        async with http.delete(f"{base}/v1/sessions/{sid}", headers=AUTH) as resp:
            assert resp.status == 204
        async with http.post(f"{base}/v1/sessions/{sid}/audio", data=b"\0\0", headers=AUTH) as resp:
            assert resp.status == 409
        async with http.get(f"{base}/v1/sessions/{sid}/events", headers=AUTH) as resp:
            events = [e async for e in read_sse(resp)]
        assert [e["type"] for e in events] == ["session.started", "session.closed"]
    assert whisper_server.open_sessions() == 0
