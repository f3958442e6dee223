"""Session trace and replay (issue 28 item 2), end to end against the real thing: a hub server
on 127.0.0.1 with the real tiny.en engine, a real WebSocket client, the ``asrhub replay``
command run as a process.

The client records every text frame the hub sent; the trace comes back through
``GET /v1/sessions/{id}/trace`` (only for the key that recorded it); ``asrhub replay`` must
print exactly those frames, byte for byte — partials, an update mid-stream and the VAD events
included, wherever the engine's timing put them on the wire.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asrhub.settings.schema import TraceSettings
from asrhub.trace import records
from asrhub.trace.replay import load
from tests.transports.conftest import AUTH, KEY, OTHER_KEY, ServerThread, frames, make_settings, speech

QUIET = b"\0\0" * 16_000
"""1 s of silence: the VAD ends the utterance."""
UPDATE = {"type": "session.update", "config": {"keyterms": ["Boston"]}}
OTHER = {"Authorization": f"Bearer {OTHER_KEY}"}


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traces")


@pytest.fixture(scope="module")
def server(traces: Path) -> Iterator[ServerThread]:
    settings = make_settings(keys=(KEY, OTHER_KEY), trace=TraceSettings(dir=str(traces)))
    with ServerThread(settings) as server:
        yield server


async def record_session(
    server: ServerThread, config: dict[str, Any], *, live: bool = False
) -> tuple[str, list[str]]:
    """One WebSocket session (two utterances, an update between them); (session id, every text
    frame the hub sent, as sent). ``live``: the audio comes at the pace a microphone gives it
    (so the engine has time for partials), else as fast as the hub takes it."""
    first, _ = speech("weather_question.wav")
    second, _ = speech("quick_fox.wav")
    wire: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws, headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": config}))

        async def read() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    wire.append(msg.data)
                    if json.loads(msg.data)["type"] == "session.closed":
                        return

        reader = asyncio.create_task(read())
        for chunk in frames(first + QUIET):
            await ws.send_bytes(chunk)
            if live:
                await asyncio.sleep(0.1)  # a microphone's pace, not a wait for the hub
        await ws.send_str(json.dumps(UPDATE))
        for chunk in frames(second + QUIET):
            await ws.send_bytes(chunk)
            if live:
                await asyncio.sleep(0.1)
        await ws.send_str(json.dumps({"type": "session.end"}))
        await asyncio.wait_for(reader, 120)
    started = json.loads(wire[0])
    assert started["type"] == "session.started", wire[0]
    return started["session_id"], wire


async def stored(server: ServerThread) -> None:
    """Every closed session's trace is in the store (the write runs off the loop)."""
    tracing = server.hub.tracing
    assert tracing is not None
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(tracing.flushed(), server.loop))  # type: ignore[attr-defined]


async def fetch(server: ServerThread, session_id: str, headers: dict[str, str]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.http}/v1/sessions/{session_id}/trace", headers=headers) as resp:
            return resp.status, await resp.read()


def replay(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asrhub", "replay", str(path), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


async def test_replay_prints_the_wire_events_byte_for_byte(server: ServerThread, traces: Path) -> None:
    config = {"trace": True, "language": "en", "partials": True}
    session_id, wire = await record_session(server, config, live=True)
    types = [json.loads(line)["type"] for line in wire]
    assert types.count("transcript.final") == 2 and "session.updated" in types, types
    assert "transcript.partial" in types and types[-1] == "session.closed", types
    await stored(server)

    status, data = await fetch(server, session_id, AUTH)
    assert status == 200
    assert data == (traces / f"{session_id}.trace").read_bytes()
    trace = load(data)
    assert trace.header.session_id == session_id and trace.header.provider == "whisper"
    assert trace.ended and trace.truncated is None and trace.closed is not None
    first, _ = speech("weather_question.wav")
    second, _ = speech("quick_fox.wav")
    assert trace.audio() == first + QUIET + second + QUIET  # the input bytes, all of them
    assert [e.json for e in trace.events] == wire[1:]  # every event after session.started

    path = traces / "copy.trace"
    path.write_bytes(data)
    result = replay(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == wire


async def test_only_the_recording_key_reads_a_trace(server: ServerThread) -> None:
    session_id, _ = await record_session(server, {"trace": True, "language": "en", "partials": False})
    await stored(server)
    status, _ = await fetch(server, session_id, AUTH)
    assert status == 200
    other_status, other_body = await fetch(server, session_id, OTHER)
    missing = "A" * len(session_id)
    missing_status, missing_body = await fetch(server, missing, OTHER)
    assert other_status == missing_status == 404
    assert other_body == missing_body.replace(missing.encode(), session_id.encode())
    bad_status, _ = await fetch(server, "..%2F..%2Fetc%2Fpasswd", AUTH)
    assert bad_status == 404


async def test_a_session_that_does_not_ask_is_not_recorded(server: ServerThread, traces: Path) -> None:
    session_id, wire = await record_session(server, {"language": "en", "partials": False})
    await stored(server)
    assert json.loads(wire[-1])["type"] == "session.closed"
    assert not (traces / f"{session_id}.trace").exists()
    status, _ = await fetch(server, session_id, AUTH)
    assert status == 404


async def test_replay_through_another_engine_diffs_the_finals(server: ServerThread, traces: Path) -> None:
    session_id, wire = await record_session(server, {"trace": True, "language": "en", "partials": False})
    await stored(server)
    path = traces / f"{session_id}.trace"
    result = replay(path, "--engine", "whisper:base", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    recorded = [r for r in rows if r["source"] == "recorded"]
    fresh = [r for r in rows if r["source"] == "whisper:base"]
    wire_finals = [json.loads(line) for line in wire if json.loads(line)["type"] == "transcript.final"]
    assert [r["text"] for r in recorded] == [f["text"] for f in wire_finals]
    assert [(r["segment_id"], r["start"], r["end"]) for r in fresh] == [
        (f["segment_id"], f["start"], f["end"]) for f in wire_finals
    ]  # the same utterances (the VAD ran again on the same bytes), another engine's words
    assert "boston" in fresh[0]["text"].lower() and "fox" in fresh[1]["text"].lower(), fresh
    text = replay(path, "--engine", "whisper:base")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("--- whisper (recorded)") or "the finals are the same" in text.stdout


def test_a_damaged_trace_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.trace"
    path.write_bytes(b"not a trace")
    result = replay(path)
    assert result.returncode == 2 and "not an ASR Hub trace" in result.stderr
    path.write_bytes(records.MAGIC + b"\0\0\0\x09abc")
    result = replay(path)
    assert result.returncode == 2 and "cut short" in result.stderr


async def test_deepgram_live_asks_with_a_query_parameter(server: ServerThread, traces: Path) -> None:
    """``/v1/listen?trace=true``: the Deepgram-shaped session is recorded (in the hub's native
    events), and replays to the events it recorded."""
    pcm, _ = speech("quick_fox.wav")
    url = server.ws.replace("/v1/stream", "/v1/listen") + "?encoding=linear16&sample_rate=16000&trace=true"
    before = await asyncio.to_thread(lambda: set(traces.glob("*.trace")))
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={"Authorization": f"Token {KEY}"}) as ws:
            for chunk in frames(pcm + QUIET):
                await ws.send_bytes(chunk)
            await ws.send_str(json.dumps({"type": "CloseStream"}))
            results = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
    assert any("fox" in json.dumps(r).lower() for r in results), results
    await stored(server)
    (path,) = await asyncio.to_thread(lambda: set(traces.glob("*.trace")) - before)
    trace = load(path.read_bytes())
    assert trace.header.transport == "deepgram" and trace.header.config["trace"] is True
    assert any("fox" in f["text"].lower() for f in trace.finals())
    result = replay(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == [e.json for e in trace.events]
