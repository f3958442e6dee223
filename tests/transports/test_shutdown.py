"""SIGTERM during live streams: ``asrhub serve`` (a subprocess) stops accepting, flushes every
open session, and each client — WebSocket, Socket.io, HTTP+SSE — still receives every final."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import aiohttp
import numpy as np
import pytest
import socketio

from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes, room_noise, wer

from .conftest import KEY, frames, serve_process

RATE = 16_000
CHUNK_MS = 100


def conversation() -> tuple[bytes, int, list[str]]:
    """Two utterances, then more speech. Returns (pcm, byte offset where SIGTERM is sent,
    the texts that must come back): the signal arrives 0.3 s after the second utterance ends,
    before the VAD's 0.5 s hangover closed it, so its final exists only thanks to the flush."""
    parts: list[np.ndarray] = []
    texts = []
    for i, name in enumerate(("quick_fox.wav", "weather_question.wav", "science.wav")):
        samples, _ = load_wav(fixture(name))
        parts += [samples, room_noise(1.2, seed=i)]
        texts.append(fixture_entry(name)["text"])
    pcm = pcm16_bytes(np.concatenate(parts))
    first_two = sum(len(p) for p in parts[:3])  # u1, silence, u2
    signal_at = (first_two + int(0.3 * RATE)) * 2
    return pcm, signal_at - signal_at % (RATE * 2 * CHUNK_MS // 1000), texts[:2]


async def paced(pcm: bytes, send: Any, marks: dict[str, asyncio.Event], signal_at: int) -> None:
    """Send at real-time pace up to ``signal_at`` bytes, set marks["at_signal"], and stop.

    Stopping there makes the outcome independent of when the signal lands (a loaded machine
    may deliver it seconds late): without more audio the VAD cannot close utterance 2 on its
    own and utterance 3 never starts, so exactly two finals come back, the second only
    thanks to the shutdown's flush."""
    t0 = time.monotonic()
    sent = 0
    for frame in frames(pcm, CHUNK_MS):
        delay = t0 + sent / (RATE * 2) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            await send(frame)
        except (ConnectionError, aiohttp.ClientError, socketio.exceptions.SocketIOError):
            return  # the hub closed after the flush: the client stops
        sent += len(frame)
        if sent >= signal_at:
            marks["at_signal"].set()
            return


async def ws_client(
    port: int, pcm: bytes, marks: dict[str, asyncio.Event], signal_at: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            f"ws://127.0.0.1:{port}/v1/stream", headers={"Authorization": f"Bearer {KEY}"}
        )
        await ws.send_str(json.dumps({"type": "session.start", "config": {"language": "en"}}))
        sender = asyncio.create_task(paced(pcm, ws.send_bytes, marks, signal_at))
        while (msg := await ws.receive()).type is aiohttp.WSMsgType.TEXT:
            events.append(json.loads(msg.data))
        sender.cancel()
        events.append({"type": "(closed)", "code": msg.data})
    return events


async def sio_client(
    port: int, pcm: bytes, marks: dict[str, asyncio.Event], signal_at: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    client = socketio.AsyncClient(reconnection=False)
    gone = asyncio.Event()
    for name in ("session.started", "transcript.final", "error", "session.closed"):
        client.on(name, lambda data: events.append(data))
    client.on("disconnect", lambda *_: gone.set())
    await client.connect(f"http://127.0.0.1:{port}", auth={"token": KEY}, transports=["websocket"])
    await client.emit("session.start", {"type": "session.start", "config": {"language": "en"}})

    async def send(frame: bytes) -> None:
        if not client.connected:
            raise ConnectionError("disconnected")
        await client.emit("audio", frame)

    sender = asyncio.create_task(paced(pcm, send, marks, signal_at))
    await gone.wait()
    sender.cancel()
    return events


async def sse_client(
    port: int, pcm: bytes, marks: dict[str, asyncio.Event], signal_at: int
) -> list[dict[str, Any]]:
    from .test_sse import read_sse

    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/v1/sessions", json={"config": {"language": "en"}}, headers=auth
        ) as resp:
            sid = (await resp.json())["session_id"]

        async def send(frame: bytes) -> None:
            async with http.post(f"{base}/v1/sessions/{sid}/audio", data=frame, headers=auth) as resp:
                if resp.status != 204:
                    raise ConnectionError(resp.status)

        async with http.get(f"{base}/v1/sessions/{sid}/events", headers=auth) as resp:
            sender = asyncio.create_task(paced(pcm, send, marks, signal_at))
            async for event in read_sse(resp):
                events.append(event)
            sender.cancel()
    return events


async def refuses_connections(port: int, within: float) -> bool:
    """Wait until the hub stops accepting (it closes its listening socket once the signal is
    handled); False if it still accepts after ``within`` seconds."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    await resp.read()
            except aiohttp.ClientConnectionError:
                return True
            await asyncio.sleep(0.05)
    return False


@pytest.mark.timeout(180)
async def test_sigterm_mid_stream_flushes_every_final_to_every_client() -> None:
    pcm, signal_at, expected = conversation()
    with serve_process("--set", "server.shutdown_grace_s=30", env={"ASRHUB_API_KEYS": f"other, {KEY}"}) as (
        proc,
        port,
    ):
        marks = {name: {"at_signal": asyncio.Event()} for name in ("ws", "sio", "sse")}
        clients = {
            "ws": asyncio.create_task(ws_client(port, pcm, marks["ws"], signal_at)),
            "sio": asyncio.create_task(sio_client(port, pcm, marks["sio"], signal_at)),
            "sse": asyncio.create_task(sse_client(port, pcm, marks["sse"], signal_at)),
        }
        await asyncio.wait_for(asyncio.gather(*(m["at_signal"].wait() for m in marks.values())), 60)
        proc.send_signal(signal.SIGTERM)
        assert await refuses_connections(port, within=30), "still accepting after SIGTERM"
        results = {name: await asyncio.wait_for(task, 60) for name, task in clients.items()}
        assert await asyncio.to_thread(proc.wait, 60) == 0
        out = proc.stdout.read() if proc.stdout else ""
        assert "shutting down" in out
    for name, events in results.items():
        finals = [e for e in events if e["type"] == "transcript.final"]
        assert len(finals) == 2, (name, events)
        for final, text in zip(finals, expected, strict=True):
            assert wer(text, final["text"]) <= 0.15, (name, final["text"])
        assert events[0]["type"] == "session.started", name
        closed = [e for e in events if e["type"] == "session.closed"]
        assert closed and events.index(closed[0]) > events.index(finals[-1]), name
        errors = [e for e in events if e["type"] == "error"]
        assert all(not e["fatal"] and "shutting down" in e["message"] for e in errors), errors
    assert results["ws"][-1] == {"type": "(closed)", "code": 1000}


CLOSE_TIMEOUT_S = 2.0
"""How long one polite WebSocket close waits for a client's reply (transports/websocket.py)."""


@pytest.mark.timeout(180)
async def test_connections_that_ignore_the_close_are_closed_all_at_once() -> None:
    """Eight WebSocket clients that stopped reading (their hub → client buffers full of pongs,
    so not even a close frame goes out) are still connected at SIGTERM: they are closed
    together, within one bound, not one after another (2 s each: 16 s more before the process
    could exit; the old code took 21.1 s here)."""
    from tests.reliability.harness import RawWS

    clients = 8
    with serve_process(
        "--default-provider", "none", "--set", "limits.start_timeout_s=120", env={"ASRHUB_API_KEYS": KEY}
    ) as (proc, port):
        deaf = []
        for _ in range(clients):
            ws = await RawWS.connect(port, headers={"Authorization": f"Bearer {KEY}"}, rcvbuf=4096)
            ws.writer.transport.pause_reading()
            for _ in range(12_000):  # ~300 KB of pongs: more than the socket buffers hold (~150 KB)
                ws.writer.write(ws.frame(ws.TEXT, b'{"type": "ping", "id": 1}'))
            await ws.writer.drain()
            deaf.append(ws)
        await asyncio.sleep(2.0)  # the hub answers until its writes block
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 120) == 0
        took = time.monotonic() - started
        for ws in deaf:
            ws.writer.close()
    print(f"SIGTERM with {clients} deaf WebSocket clients: exited after {took:.1f} s")
    # the delivery grace (5 s) for every connection, then one close bound for all of them
    assert took < 5.0 + CLOSE_TIMEOUT_S * clients / 2, took
