"""WebSocket transport (/v1/stream) against the real default engine, with aiohttp's client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from asrhub.transports.common import CONNECTIONS
from tests.audio_utils import wer

from .conftest import AUTH, KEY, ServerThread, finals_text, frames, speech


async def collect(ws: aiohttp.ClientWebSocketResponse, until: str = "session.closed") -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async for msg in ws:
        assert msg.type is aiohttp.WSMsgType.TEXT, "the hub sends JSON text frames only"
        events.append(json.loads(msg.data))
        if events[-1]["type"] == until:
            break
    return events


async def test_streams_fixture_speech_to_correct_finals(whisper_server: ServerThread) -> None:
    pcm, reference = speech("quick_fox.wav")
    async with aiohttp.ClientSession() as http, http.ws_connect(whisper_server.ws, headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": {"language": "en"}}))
        started = await ws.receive_json()
        assert started["type"] == "session.started"
        assert started["config"]["provider"] == "whisper"
        assert started["config"]["audio"] == {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}
        for frame in frames(pcm):
            await ws.send_bytes(frame)
        await ws.send_str(json.dumps({"type": "session.end"}))
        events = await collect(ws)
        msg = await ws.receive()
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1000
    types = [e["type"] for e in events]
    assert types[-1] == "session.closed" and events[-1]["reason"] == "end"
    assert "vad.speech_started" in types and "vad.speech_ended" in types
    assert types.index("vad.speech_started") < types.index("transcript.final")
    final = next(e for e in events if e["type"] == "transcript.final")
    assert final["provider"] == "whisper" and final["language"] == "en"
    assert 0.0 <= final["start"] < final["end"] <= 3.24 + 0.25
    assert wer(reference, finals_text(events)) <= 0.1, finals_text(events)


async def test_ping_pong_and_bad_messages_keep_the_session(whisper_server: ServerThread) -> None:
    pcm, reference = speech("weather_question.wav")
    async with aiohttp.ClientSession() as http, http.ws_connect(whisper_server.ws, headers=AUTH) as ws:
        await ws.send_bytes(pcm[:3200])  # audio before session.start
        error = await ws.receive_json()
        assert error["type"] == "error" and error["code"] == "bad_message" and not error["fatal"]
        await ws.send_str(json.dumps({"type": "ping", "id": "before"}))
        assert await ws.receive_json() == {"type": "pong", "id": "before"}
        await ws.send_str(json.dumps({"action": {"type": "session.start", "payload": {}}}))
        error = await ws.receive_json()
        assert error["code"] == "bad_message" and "wrapped" in error["message"] and not error["fatal"]
        await ws.send_str(json.dumps({"type": "session.start", "config": {"audio": {"sample_rate": 3}}}))
        error = await ws.receive_json()
        assert error["code"] == "bad_message" and "sample_rate" in error["message"]
        await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "nope"}}))
        error = await ws.receive_json()
        assert error["code"] == "unknown_provider" and not error["fatal"]
        await ws.send_str(json.dumps({"type": "session.start"}))
        assert (await ws.receive_json())["type"] == "session.started"
        for bad in ('{"data": {"type": "ping"}}', "not json", '{"type": "audio", "data": "AAAA"}', "[]"):
            await ws.send_str(bad)
            error = await ws.receive_json()
            assert error["type"] == "error" and error["code"] == "bad_message", bad
        await ws.send_str(json.dumps({"type": "session.start"}))
        assert (await ws.receive_json())["code"] == "bad_message"  # one session per connection
        for frame in frames(pcm):
            await ws.send_bytes(frame)
        await ws.send_str(json.dumps({"type": "ping", "id": 42}))
        await ws.send_str(json.dumps({"type": "session.end"}))
        events = await collect(ws)
    assert {"type": "pong", "id": 42} in events
    assert wer(reference, finals_text(events)) <= 0.1


async def test_too_large_frames(whisper_server: ServerThread) -> None:
    limit = whisper_server.settings.limits.max_frame_bytes
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(whisper_server.ws, headers=AUTH) as ws:
            await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            assert (await ws.receive_json())["type"] == "session.started"
            await ws.send_bytes(bytes(limit + 2))
            error = await ws.receive_json()
            assert error["code"] == "too_large" and not error["fatal"] and str(limit) in error["message"]
            await ws.send_str(json.dumps({"type": "ping", "id": 1}))
            assert await ws.receive_json() == {"type": "pong", "id": 1}  # the session lives
            await ws.send_str(json.dumps({"type": "ping", "id": "x" * 70_000}))
            assert (await ws.receive_json())["code"] == "too_large"
        async with http.ws_connect(whisper_server.ws, headers=AUTH) as ws:
            await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            assert (await ws.receive_json())["type"] == "session.started"
            await ws.send_bytes(bytes(2 * limit + 1))  # past what the socket reads at all
            msg = await ws.receive()
            assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1009
    assert await whisper_server.no_sessions()


async def test_disconnect_releases_the_session(whisper_server: ServerThread) -> None:
    pcm, _ = speech("science.wav")
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(whisper_server.ws, headers=AUTH)
        await ws.send_str(json.dumps({"type": "session.start"}))
        await ws.receive_json()
        for frame in frames(pcm)[:20]:
            await ws.send_bytes(frame)
        assert whisper_server.open_sessions() == 1
        await ws.close()
    assert await whisper_server.no_sessions()
    assert whisper_server.call(lambda: len(whisper_server.app[CONNECTIONS])) == 0


@pytest.mark.parametrize("name", ["address_time.wav", "reminder.wav"])
async def test_python_client_streams_a_file(whisper_server: ServerThread, name: str) -> None:
    from asrhub.client import stream
    from asrhub.frames import FinalTranscript, SessionClosed, SessionStarted
    from tests.audio_utils import fixture, fixture_entry

    events = [
        e async for e in stream(whisper_server.ws, fixture(name), api_key=KEY, config={"language": "en"})
    ]
    assert isinstance(events[0], SessionStarted) and isinstance(events[-1], SessionClosed)
    text = " ".join(e.text for e in events if isinstance(e, FinalTranscript))
    assert wer(fixture_entry(name)["text"], text) <= 0.15, text


async def test_stream_command_prints_finals(whisper_server: ServerThread) -> None:
    import sys

    from tests.audio_utils import fixture, fixture_entry

    async def run(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "asrhub",
            "stream",
            str(fixture("science.wav")),
            "--url",
            whisper_server.ws,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await run("--api-key", KEY, "--language", "en")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines and all(line.startswith("[") for line in lines)  # not a terminal: finals only
    text = " ".join(line.split("]", 1)[1] for line in lines)
    assert wer(fixture_entry("science.wav")["text"], text) <= 0.1, out
    code, out, _ = await run("--api-key", KEY, "--json", "--realtime")
    kinds = [json.loads(line)["type"] for line in out.splitlines()]
    assert code == 0 and kinds[0] == "session.started" and kinds[-1] == "session.closed"
    assert "transcript.partial" in kinds and "transcript.final" in kinds
    code, out, err = await run("--api-key", "wrong")
    assert code == 2 and "unauthorized" in err and not out


class FakeUnencodable(str):
    """Fault injection: a message text msgspec cannot encode (a ``str`` subclass)."""


async def test_an_event_that_cannot_be_encoded_closes_with_an_internal_error(
    whisper_server: ServerThread,
) -> None:
    """An encoding failure is a bug, not a closed socket: the connection is closed with 1011
    and the session with it, instead of delivery stopping in silence (msgspec's error used to
    be a RuntimeError, which the forwarder read as 'the socket went away')."""
    from asrhub.frames import ErrorEvent

    async with aiohttp.ClientSession() as http, http.ws_connect(whisper_server.ws, headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
        started = await ws.receive_json()
        session = whisper_server.call(lambda: whisper_server.hub.sessions[started["session_id"]])
        whisper_server.call(lambda: session._emit(ErrorEvent(code="x", message=FakeUnencodable("m"))))
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.INTERNAL_ERROR, msg
    assert await whisper_server.no_sessions()
