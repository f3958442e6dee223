"""Nothing lost: every utterance the hub accepted gets exactly one ``transcript.final`` (or one
``error`` naming its ``segment_id``) — counted against the utterances of
tests/fixtures/silences.wav (manifest.json) — under load (several sessions at once, one of them
a slow reader), and across a graceful shutdown (SIGTERM to ``asrhub serve`` mid-stream)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from typing import Any

import aiohttp
import socketio

from tests.audio_utils import wer
from tests.transports.conftest import ServerThread

from .harness import RATE, RawWS, ServeProcess, Watch, chunks, log_errors, manifest_segments, pcm_of

SILENCES = pcm_of("silences.wav")
SEGMENTS = manifest_segments()


def outcomes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The one-per-utterance events: finals and errors that name a segment."""
    kinds = ("transcript.final", "error")
    return [e for e in events if e["type"] in kinds and (e["type"] == kinds[0] or "segment_id" in e)]


def check_counted(
    events: list[dict[str, Any]], segments: list[dict[str, Any]], who: str, *, cut_last: bool = False
) -> None:
    """One outcome per utterance, in order; ``cut_last``: the last one was cut short (its text
    is compared with as many words of the reference)."""
    got = outcomes(events)
    started = [e for e in events if e["type"] == "vad.speech_started"]
    ids = [e["segment_id"] for e in got]
    assert ids == list(range(1, len(segments) + 1)), (who, ids)  # one each, in order, none twice
    assert len(started) == len(segments), (who, started)
    assert [e["type"] for e in events].count("session.closed") == 1, who
    for event, ref in zip(got, segments, strict=True):
        assert event["type"] == "transcript.final", (who, event)
        assert event["start"] < ref["end"] and event["end"] > ref["start"], (who, event, ref)
        reference = ref["text"]
        if cut_last and ref is segments[-1]:
            reference = " ".join(reference.split()[: len(event["text"].split())])
        assert event["text"] and wer(reference, event["text"]) < 0.35, (who, reference, event["text"])


# ------------------------------------------------------------------ under load


async def ws_session(port: int, config: dict[str, Any], *, slow: bool = False) -> list[dict[str, Any]]:
    """silences.wav at full speed. ``slow``: a 4 KB receive buffer and a reader that takes
    0.15 s per message and stops reading for 2 s in the middle: slow, but within bounds."""
    ws = await RawWS.connect(port, rcvbuf=4096 if slow else None)
    await ws.send_json({"type": "session.start", "config": config})

    async def send() -> None:
        for chunk in chunks(SILENCES, 100):
            await ws.send_bytes(chunk)
        await ws.send_json({"type": "session.end"})

    sender = asyncio.create_task(send())
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(120):
        while not events or events[-1]["type"] != "session.closed":
            events.append(await ws.recv_json())
            if slow:
                await asyncio.sleep(2.0 if len(events) == 5 else 0.15)
    await sender
    await ws.close()
    return events


async def sio_session(base: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    client = socketio.AsyncClient(reconnection=False)
    events: list[dict[str, Any]] = []
    closed = asyncio.Event()
    for kind in ("vad.speech_started", "transcript.final", "error", "session.closed"):
        client.on(kind, lambda data: (events.append(data), data["type"] == "session.closed" and closed.set()))
    await client.connect(base, transports=["websocket"])
    try:
        await client.emit("session.start", {"config": config})
        for chunk in chunks(SILENCES, 100):
            await client.emit("audio", chunk)
        await client.emit("session.end", {})
        await asyncio.wait_for(closed.wait(), 120)
    finally:
        await client.disconnect()
    return events


async def test_every_utterance_once_under_load_and_a_slow_reader(
    hub_server: ServerThread, watch: Watch, figures: Any
) -> None:
    port = hub_server.port
    started = time.monotonic()
    results = await asyncio.gather(
        ws_session(port, {"language": "en"}),
        ws_session(port, {"language": "en"}, slow=True),
        ws_session(port, {"language": "en", "partials": False}),
        sio_session(hub_server.http, {"language": "en"}),
    )
    took = time.monotonic() - started
    for who, events in zip(("ws", "ws slow reader", "ws no partials", "socket.io"), results, strict=True):
        check_counted(events, SEGMENTS, who)
    assert watch.errors() == []
    partials = sum(1 for events in results for e in events if e["type"] == "transcript.partial")
    figures(
        "nothing lost under load",
        f"4 concurrent sessions x 4 utterances (one a slow reader): 16 finals, 0 missing, 0 twice, "
        f"{partials} partials, {took:.1f} s",
    )


# ------------------------------------------------------------------ graceful shutdown

SIGNAL_AT_S = SEGMENTS[2]["start"] + 1.3
"""1.3 s into the third utterance: its final exists only thanks to the shutdown's flush."""
PACE = 3.0


async def paced(send: Any, at_signal: asyncio.Event) -> None:
    t0, sent = time.monotonic(), 0
    for chunk in chunks(SILENCES, 100):
        delay = t0 + sent / (RATE * 2) / PACE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await send(chunk)
        except (ConnectionError, aiohttp.ClientError, socketio.exceptions.SocketIOError, RuntimeError):
            return
        sent += len(chunk)
        if sent >= SIGNAL_AT_S * RATE * 2:
            at_signal.set()


async def ws_client(port: int, at_signal: asyncio.Event) -> list[dict[str, Any]]:
    ws = await RawWS.connect(port)
    await ws.send_json({"type": "session.start", "config": {"language": "en", "partials": False}})
    sender = asyncio.create_task(paced(ws.send_bytes, at_signal))
    events = await ws.events_until(lambda e: e["type"] == "session.closed", within=90)
    sender.cancel()
    ws.writer.close()
    return events


async def sio_client(port: int, at_signal: asyncio.Event) -> list[dict[str, Any]]:
    client = socketio.AsyncClient(reconnection=False)
    events: list[dict[str, Any]] = []
    closed = asyncio.Event()
    for kind in ("vad.speech_started", "transcript.final", "error", "session.closed"):
        client.on(kind, lambda data: (events.append(data), data["type"] == "session.closed" and closed.set()))
    await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
    await client.emit("session.start", {"config": {"language": "en", "partials": False}})

    async def send(chunk: bytes) -> None:
        if not client.connected:
            raise ConnectionError("disconnected")
        await client.emit("audio", chunk)

    sender = asyncio.create_task(paced(send, at_signal))
    await asyncio.wait_for(closed.wait(), 90)
    sender.cancel()
    await client.disconnect()
    return events


async def sse_client(port: int, at_signal: asyncio.Event) -> list[dict[str, Any]]:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        config = {"config": {"language": "en", "partials": False}}
        async with http.post(f"{base}/v1/sessions", json=config) as resp:
            sid = (await resp.json())["session_id"]

        async def send(chunk: bytes) -> None:
            async with http.post(f"{base}/v1/sessions/{sid}/audio", data=chunk) as resp:
                if resp.status != 204:
                    raise ConnectionError(resp.status)

        events: list[dict[str, Any]] = []
        async with http.get(f"{base}/v1/sessions/{sid}/events") as stream:
            sender = asyncio.create_task(paced(send, at_signal))
            async for line in stream.content:
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
                    if events[-1]["type"] == "session.closed":
                        break
            sender.cancel()
    return events


async def test_every_accepted_utterance_once_across_sigterm(figures: Any) -> None:
    with ServeProcess("server.shutdown_grace_s=60") as hub:
        marks = [asyncio.Event() for _ in range(3)]
        clients = [
            asyncio.create_task(ws_client(hub.port, marks[0])),
            asyncio.create_task(sio_client(hub.port, marks[1])),
            asyncio.create_task(sse_client(hub.port, marks[2])),
        ]
        await asyncio.wait_for(asyncio.gather(*(m.wait() for m in marks)), 60)
        stopped_at = time.monotonic()
        hub.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        results = await asyncio.wait_for(asyncio.gather(*clients), 90)
        code = await asyncio.to_thread(hub.proc.wait, 60)  # type: ignore[union-attr]
        took = time.monotonic() - stopped_at
        lines = hub.log_lines()
    assert code == 0
    for who, events in zip(("websocket", "socket.io", "sse"), results, strict=True):
        check_counted(events, SEGMENTS[:3], who, cut_last=True)
        assert events[-1]["type"] == "session.closed"
    assert log_errors(lines) == []
    with socket.socket() as probe:  # the port is closed: the process really went away
        assert probe.connect_ex(("127.0.0.1", hub.port)) != 0
    figures(
        "nothing lost across SIGTERM",
        "3 transports x 3 accepted utterances (the third cut by the signal): 9 finals, 0 missing, "
        f"0 twice; exit 0 {took:.1f} s after the signal",
    )
