"""Resumable sessions: a client whose connection drops reconnects with its resume token,
continues the same session and receives every final it missed, in order — over a real
WebSocket and Socket.io, with faster-whisper on the fixtures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import socketio

from asrhub.frames import ErrorEvent, FinalTranscript, PartialTranscript, SessionClosed, SpeechStarted
from asrhub.session.resume import ResumeLog
from tests.audio_utils import wer
from tests.transports.conftest import ServerThread

from .harness import RATE, RawSocketIO, RawWS, Watch, WSClosed, chunks, eventually, manifest_segments, pcm_of

SILENCES = pcm_of("silences.wav")
SEGMENTS = manifest_segments()
CONFIG = {"language": "en", "partials": False}


def upto(seconds: float) -> int:
    return int(seconds * RATE) * 2


async def send_audio(ws: RawWS, pcm: bytes) -> None:
    for chunk in chunks(pcm, 200):
        await ws.send_bytes(chunk)


def finals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "transcript.final"]


def check_transcripts(got: list[dict[str, Any]], segments: list[dict[str, Any]]) -> None:
    """One final per manifest utterance, in order, each overlapping its utterance, text close."""
    assert [f["segment_id"] for f in got] == sorted({f["segment_id"] for f in got}), got
    assert len(got) == len(segments), [f["text"] for f in got]
    for final, ref in zip(got, segments, strict=True):
        assert final["start"] < ref["end"] and final["end"] > ref["start"], (final, ref)
        assert wer(ref["text"], final["text"]) < 0.35, (ref["text"], final["text"])


async def hub_state(server: ServerThread) -> tuple[int, int, int]:
    return await asyncio.to_thread(
        server.call, lambda: (len(server.hub.sessions), len(server.hub.resumes), server.hub.resumes.detached)
    )


async def test_websocket_drop_then_resume_gets_every_missed_final_in_order(
    hub_server: ServerThread, watch: Watch
) -> None:
    ws = await RawWS.connect(hub_server.port)
    await ws.send_json({"type": "session.start", "config": CONFIG, "resume": True})
    started = await ws.recv_json()
    token = started["resume_token"]
    assert started["type"] == "session.started" and isinstance(token, str) and len(token) >= 20
    seen: list[dict[str, Any]] = []
    # Utterance 1, then enough silence for the VAD to close it: wait for its final.
    cut1 = upto(SEGMENTS[0]["end"] + 1.2)
    await send_audio(ws, SILENCES[:cut1])
    seen += await ws.events_until(lambda e: e["type"] == "transcript.final")
    last = finals(seen)[-1]["segment_id"]
    # Utterance 2 and its closing silence, then vanish before its final can arrive.
    cut2 = upto(SEGMENTS[1]["end"] + 1.2)
    await send_audio(ws, SILENCES[cut1:cut2])
    await ws.send_json({"type": "ping", "id": "fed"})  # answered once every frame before it was fed
    seen += await ws.events_until(lambda e: e["type"] == "pong")
    assert not finals(seen)[1:], "utterance 2 was transcribed before the drop"
    ws.reset()
    assert await eventually(lambda: _detached(hub_server, 1), 5), "the session was not detached"
    assert (await hub_state(hub_server))[0] == 1  # still open, waiting for its client
    # Its final is produced while nobody is connected: wait until the session logged it.
    assert await eventually(lambda: _logged_after(hub_server, token, last), 60), "no final while detached"

    ws2 = await RawWS.connect(hub_server.port)
    await ws2.send_json({"type": "session.resume", "token": token, "last_segment_id": last})
    resumed = await ws2.recv_json()
    assert resumed["type"] == "session.resumed", resumed
    assert resumed["session_id"] == started["session_id"] and resumed["complete"] is True
    assert resumed["replayed"] >= 1 and resumed["last_segment_id"] == last
    offset = resumed["bytes_received"]
    assert offset == cut2
    replayed = [await ws2.recv_json() for _ in range(resumed["replayed"])]
    assert all(e["type"] == "transcript.final" for e in replayed), replayed
    # Resend whatever the drop lost, then the rest of the file, then end.
    await send_audio(ws2, SILENCES[offset:])
    await ws2.send_json({"type": "session.end"})
    rest = await ws2.events_until(lambda e: e["type"] == "session.closed")
    await ws2.close()
    assert rest[-1] == {"type": "session.closed", "reason": "end"}
    check_transcripts(finals(seen) + replayed + finals(rest), SEGMENTS)
    assert await eventually(lambda: _settled(hub_server), 5)
    assert watch.errors() == []


async def _logged_after(server: ServerThread, token: str, last: int) -> bool:
    """The detached session's resume log holds a final after ``last``."""

    def check() -> bool:
        held = server.hub.resumes._held.get(token)
        return held is not None and any(isinstance(e, FinalTranscript) for e in held.log.since(last)[0])

    return await asyncio.to_thread(server.call, check)


async def _detached(server: ServerThread, n: int) -> bool:
    return (await hub_state(server))[2] == n


async def _settled(server: ServerThread) -> bool:
    return await hub_state(server) == (0, 0, 0)


async def test_an_expired_or_unknown_token_is_refused_and_the_connection_can_start_afresh(
    hub_server: ServerThread, watch: Watch
) -> None:
    ws = await RawWS.connect(hub_server.port)
    await ws.send_json({"type": "session.start", "config": {"provider": "none"}, "resume": True})
    token = (await ws.recv_json())["resume_token"]
    await send_audio(ws, SILENCES[: upto(2.0)])
    ws.reset()
    assert await eventually(lambda: _detached(hub_server, 1), 5)
    window = hub_server.hub.limits.resume_window_s
    assert await eventually(lambda: _settled(hub_server), window + 3), "the window did not expire"
    ws2 = await RawWS.connect(hub_server.port)
    for token_sent in (token, "never-issued"):
        await ws2.send_json({"type": "session.resume", "token": token_sent, "last_segment_id": None})
        error = await ws2.recv_json()
        assert error["type"] == "error" and error["code"] == "resume_failed" and error["fatal"] is False
    await ws2.send_json({"type": "session.start", "config": {"provider": "none"}})
    assert (await ws2.recv_json())["type"] == "session.started"
    await ws2.close()
    assert await eventually(lambda: _settled(hub_server), 5)
    assert watch.errors() == []


async def test_a_clean_close_ends_a_resumable_session_at_once(hub_server: ServerThread, watch: Watch) -> None:
    ws = await RawWS.connect(hub_server.port)
    await ws.send_json({"type": "session.start", "config": {"provider": "none"}, "resume": True})
    token = (await ws.recv_json())["resume_token"]
    await send_audio(ws, SILENCES[: upto(1.0)])
    await ws.close(1000)  # a close frame: the client is done
    assert await eventually(lambda: _settled(hub_server), 2)
    ws2 = await RawWS.connect(hub_server.port)
    await ws2.send_json({"type": "session.resume", "token": token})
    assert (await ws2.recv_json())["code"] == "resume_failed"
    await ws2.close()
    assert watch.errors() == []


async def test_a_session_that_ended_while_detached_replays_its_finals_and_close(
    hub_server: ServerThread, watch: Watch
) -> None:
    """``session.end`` sent, connection lost before the flush: resume gets final + closed."""
    ws = await RawWS.connect(hub_server.port)
    await ws.send_json({"type": "session.start", "config": CONFIG, "resume": True})
    token = (await ws.recv_json())["resume_token"]
    await send_audio(ws, pcm_of("quick_fox.wav"))
    await ws.send_json({"type": "session.end"})
    await ws.send_json({"type": "ping"})  # a reset discards what the hub has not read yet
    assert [e["type"] for e in await ws.events_until(lambda e: e["type"] == "pong")][-1] == "pong"
    ws.reset()
    assert await eventually(lambda: _sessions(hub_server, 0), 20), "the flush did not finish"
    ws2 = await RawWS.connect(hub_server.port)
    await ws2.send_json({"type": "session.resume", "token": token})
    events = await ws2.events_until(lambda e: e["type"] == "session.closed")
    assert [e["type"] for e in events] == ["session.resumed", "transcript.final", "session.closed"]
    assert events[0]["replayed"] == 2
    assert wer("The quick brown fox jumps over the lazy dog.", events[1]["text"]) < 0.3
    with pytest.raises(WSClosed) as closed:
        await ws2.recv()
    assert closed.value.code == 1000
    assert await eventually(lambda: _settled(hub_server), 5)
    assert watch.errors() == []


async def _sessions(server: ServerThread, n: int) -> bool:
    return (await hub_state(server))[0] == n


async def test_resuming_twice_at_once_hands_the_session_to_the_last_connection(
    hub_server: ServerThread, watch: Watch
) -> None:
    """The old connection may still look alive to the hub: a resume takes the session over
    (close code 4409 for the one that lost it); two resumes racing end with exactly one owner."""
    old = await RawWS.connect(hub_server.port)
    await old.send_json({"type": "session.start", "config": CONFIG, "resume": True})
    started = await old.recv_json()
    await send_audio(old, SILENCES[: upto(SEGMENTS[0]["end"] + 1.2)])
    a, b = await RawWS.connect(hub_server.port), await RawWS.connect(hub_server.port)
    message = {"type": "session.resume", "token": started["resume_token"], "last_segment_id": 0}
    await asyncio.gather(a.send_json(message), b.send_json(message))
    outcomes: dict[str, list[dict[str, Any]]] = {}
    resumed: dict[str, dict[str, Any]] = {}
    changed = asyncio.Event()

    async def read(name: str, ws: RawWS) -> None:
        events: list[dict[str, Any]] = []
        with contextlib.suppress(WSClosed):
            while True:
                event = await ws.recv_json(30)
                events.append(event)
                if event["type"] == "session.resumed":
                    resumed[name] = event
                    changed.set()
                if event["type"] == "session.closed":
                    break
        events.append({"type": "(closed)", "code": ws.close_code})
        outcomes[name] = events
        changed.set()

    async def until(done: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not done():
                changed.clear()
                await changed.wait()

    readers = [asyncio.create_task(read(n, w)) for n, w in (("old", old), ("a", a), ("b", b))]
    await until(lambda: "a" in outcomes or "b" in outcomes)  # the loser is closed with 4409
    owners = [n for n in ("a", "b") if n not in outcomes]
    assert len(owners) == 1, outcomes
    loser = "a" if owners == ["b"] else "b"
    await until(lambda: "old" in outcomes and owners[0] in resumed)
    assert outcomes[loser][-1]["code"] == 4409 and outcomes["old"][-1]["code"] == 4409
    owner = a if owners == ["a"] else b
    # The client re-sends from what the session had taken when it was handed over: audio the old
    # connection sent but the hub had not read yet is gone with that connection.
    offset = resumed[owners[0]]["bytes_received"]
    assert offset <= upto(SEGMENTS[0]["end"] + 1.2)
    await send_audio(owner, SILENCES[offset : upto(SEGMENTS[1]["end"] + 1.0)])
    await owner.send_json({"type": "session.end"})
    await asyncio.gather(*readers)
    await owner.close()
    got = [e for name in ("old", "a", "b") for e in finals(outcomes[name])]
    check_transcripts(sorted(got, key=lambda f: f["segment_id"]), SEGMENTS[:2])
    assert outcomes[owners[0]][-2] == {"type": "session.closed", "reason": "end"}
    assert await eventually(lambda: _settled(hub_server), 5)
    assert watch.errors() == []


async def test_socketio_drop_then_resume_with_the_python_client(
    hub_server: ServerThread, watch: Watch
) -> None:
    raw = await RawSocketIO.connect(hub_server.port)
    await raw.emit("session.start", {"type": "session.start", "config": CONFIG, "resume": True})
    name, started = await raw.recv_event()
    assert name == "session.started" and started["resume_token"]
    cut = upto(SEGMENTS[0]["end"] + 1.2)
    for chunk in chunks(SILENCES[:cut], 200):
        await raw.emit_binary("audio", chunk)
    raw.reset()  # its final comes while it is gone
    assert await eventually(lambda: _detached(hub_server, 1), 5)

    client = socketio.AsyncClient(reconnection=False)
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for kind in ("session.resumed", "transcript.final", "session.closed", "error"):
        client.on(kind, events.put_nowait)
    await client.connect(hub_server.http, transports=["websocket"])
    try:
        await client.emit("session.resume", {"token": started["resume_token"], "last_segment_id": None})
        resumed = await asyncio.wait_for(events.get(), 30)
        assert resumed["type"] == "session.resumed" and resumed["session_id"] == started["session_id"]
        got = [await asyncio.wait_for(events.get(), 30) for _ in range(resumed["replayed"])]
        offset = resumed["bytes_received"]
        for chunk in chunks(SILENCES[offset : upto(SEGMENTS[1]["end"] + 1.0)], 200):
            await client.emit("audio", chunk)
        await client.emit("session.end", {})
        while got[-1:] == [] or got[-1]["type"] != "session.closed":
            got.append(await asyncio.wait_for(events.get(), 30))
    finally:
        await client.disconnect()
    check_transcripts([e for e in got if e["type"] == "transcript.final"], SEGMENTS[:2])
    assert await eventually(lambda: _settled(hub_server), 5)
    assert watch.errors() == []


# ------------------------------------------------------------------ the log itself


def final(segment_id: int) -> FinalTranscript:
    return FinalTranscript(segment_id, f"text {segment_id}", 0.0, 1.0, "whisper")


def test_log_keeps_what_a_client_must_not_miss_and_says_when_it_lost_some() -> None:
    log = ResumeLog(maxlen=3)
    for event in (SpeechStarted(0.1), final(1), PartialTranscript(2, "x", 0, 1), final(2)):
        log.record(event)
    log.record(ErrorEvent("provider_failed", "engine down", segment_id=3))
    log.record(ErrorEvent("bad_audio", "not for the log"))
    assert log.since(1) == ([final(2), ErrorEvent("provider_failed", "engine down", segment_id=3)], True)
    log.record(final(4))  # over the bound: final 1 is evicted
    missed, complete = log.since(None)
    assert [getattr(e, "segment_id", None) for e in missed] == [2, 3, 4] and complete is False
    assert log.since(0)[1] is False and log.since(1)[1] is True
    log.record(ErrorEvent("timeout", "no audio", fatal=True))
    log.record(SessionClosed("timeout"))
    missed, _ = log.since(4)
    assert [e.type for e in missed] == ["error", "session.closed"]  # terminal events always
    log.ack(3)
    assert [getattr(e, "segment_id", None) for e in log.since(None)[0]] == [4, None, None]
