"""Vanishing clients: connect / stream / disconnect storms against ``asrhub serve`` (a
subprocess, faster-whisper loaded), on WebSocket, Socket.io and HTTP+SSE — TCP resets right
after connecting, in the middle of a frame, in the middle of an utterance, while a final is
being made, dropped resumable sessions, clean goodbyes. Afterwards, read from /metrics and
/healthz: zero open sessions, zero subscriptions, zero resumable sessions, zero connections,
no more asyncio tasks than before the storm, RSS within a few MB of where it started, no
error-level line in the hub's log; and the hub still transcribes.

Each transport runs two storms. The first (hundreds of cycles) has no engine work: its RSS must
stay within a few MB — it is the leak detector for sessions, connections, queues and decoders.
The second makes the engine work (finals decoded while their client vanishes): faster-whisper's
working memory (CTranslate2) is given back a few hundred ms after the last decode, so every RSS
figure is read once it has stopped moving, and the bound is on what a second engine storm adds
after a first; its tasks, pool slots and sessions must still all come back.

Default run: a few hundred cycles per transport; ``--long``: ten times as many.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import socketio

from tests.audio_utils import wer

from .harness import (
    RawSocketIO,
    RawWS,
    ServeProcess,
    WSClosed,
    chunks,
    log_errors,
    metric_sum,
    parse_metrics,
    pcm_of,
    reset,
    silence,
)

SPEECH = pcm_of("quick_fox.wav")
UTTERANCE = SPEECH + silence(0.8)
NONE = {"provider": "none"}
WHISPER = {"language": "en", "partials": False}
CYCLES = {"websocket": 500, "socketio": 400, "sse": 400}
ENGINE_CYCLES = 12
RSS_BOUND_MB = 8.0
ENGINE_RSS_BOUND_MB = 80.0

Cycle = Callable[[int, random.Random], Awaitable[None]]


@pytest.fixture(scope="module")
def hub() -> Iterator[ServeProcess]:
    settings = ("limits.resume_window_s=1.0", "limits.idle_timeout_s=3.0", "server.heartbeat_s=2.0")
    with ServeProcess(*settings) as proc:
        IDLE_TASKS[proc.port] = asyncio.run(idle_tasks(proc))
        yield proc


async def idle_tasks(proc: ServeProcess) -> float:
    """asyncio tasks of an idle hub that has served each transport once (engine.io starts its
    service task with the first Socket.io client; an engine.io socket's ping task outlives it
    by up to one ping interval, ``server.heartbeat_s``)."""
    await ws_clean(proc.port, random.Random(0))
    await sio_clean(proc.port, random.Random(0))
    await asyncio.sleep(3.0)
    metrics, _ = await scrape(proc.http)
    return metrics["asrhub_event_loop_tasks"]


IDLE_TASKS: dict[int, float] = {}


def speech_part(rng: random.Random) -> bytes:
    start = int(rng.uniform(0.2, 1.0) * 16000) * 2
    return SPEECH[start : start + int(rng.uniform(0.3, 1.5) * 16000) * 2]


# ------------------------------------------------------------------ WebSocket cycles


async def ws_started(port: int, config: dict[str, Any], **extra: Any) -> tuple[RawWS, dict[str, Any]]:
    ws = await RawWS.connect(port)
    await ws.send_json({"type": "session.start", "config": config, **extra})
    started = await ws.recv_json(10)
    assert started["type"] == "session.started", started
    return ws, started


async def ws_connect_reset(port: int, rng: random.Random) -> None:
    (await RawWS.connect(port)).reset()


async def ws_start_reset(port: int, rng: random.Random) -> None:
    ws = await RawWS.connect(port)
    await ws.send_json({"type": "session.start", "config": NONE})
    if rng.random() < 0.5:
        await ws.recv_json(10)
    ws.reset()


async def ws_mid_frame(port: int, rng: random.Random) -> None:
    ws, _ = await ws_started(port, NONE)
    frame = RawWS.frame(RawWS.BINARY, speech_part(rng))
    await ws.send_raw(frame[: rng.randrange(1, len(frame))])
    ws.reset()


async def ws_mid_utterance(port: int, rng: random.Random, config: dict[str, Any] = NONE) -> None:
    ws, _ = await ws_started(port, config)
    for chunk in chunks(speech_part(rng), 100):
        await ws.send_bytes(chunk)
    ws.reset()


async def ws_mid_utterance_whisper(port: int, rng: random.Random) -> None:
    await ws_mid_utterance(port, rng, WHISPER)


async def ws_mid_final(port: int, rng: random.Random) -> None:
    ws, _ = await ws_started(port, WHISPER)
    for chunk in chunks(UTTERANCE, 200):
        await ws.send_bytes(chunk)
    await ws.send_json({"type": "session.end"})
    await ws.events_until(lambda e: e["type"] == "vad.speech_ended", within=10)
    await asyncio.sleep(rng.uniform(0.0, 0.4))  # the final is being decoded, or being sent
    ws.reset()


async def ws_clean(port: int, rng: random.Random) -> None:
    ws, _ = await ws_started(port, NONE)
    for chunk in chunks(speech_part(rng), 100):
        await ws.send_bytes(chunk)
    await ws.send_json({"type": "session.end"})
    events = await ws.events_until(lambda e: e["type"] == "session.closed", within=10)
    assert events[-1]["type"] == "session.closed", events
    await ws.close()


async def ws_resumable_drop(port: int, rng: random.Random) -> None:
    ws, _ = await ws_started(port, NONE, resume=True)
    await ws.send_bytes(speech_part(rng))
    ws.reset()  # detached: expires after the window


async def ws_resume(port: int, rng: random.Random) -> None:
    ws, started = await ws_started(port, NONE, resume=True)
    await ws.send_bytes(speech_part(rng))
    await ws.send_json({"type": "ping"})
    await ws.events_until(lambda e: e["type"] == "pong", within=10)
    ws.reset()
    ws2 = await RawWS.connect(port)
    await ws2.send_json({"type": "session.resume", "token": started["resume_token"]})
    for _ in range(50):  # the hub may not have seen the drop yet: then it takes the session over
        resumed = await ws2.recv_json(10)
        if resumed["type"] == "session.resumed":
            break
    await ws2.send_json({"type": "session.end"})
    events = await ws2.events_until(lambda e: e["type"] == "session.closed", within=10)
    assert events[-1]["type"] == "session.closed", events
    await ws2.close()


WS_CYCLES: list[tuple[Cycle, int]] = [
    (ws_connect_reset, 10),
    (ws_start_reset, 15),
    (ws_mid_frame, 20),
    (ws_mid_utterance, 25),
    (ws_clean, 12),
    (ws_resumable_drop, 8),
    (ws_resume, 7),
]
WS_ENGINE: list[tuple[Cycle, int]] = [(ws_mid_final, 2), (ws_mid_utterance_whisper, 1)]


# ------------------------------------------------------------------ Socket.io cycles


async def sio_started(port: int, config: dict[str, Any], **extra: Any) -> RawSocketIO:
    sio = await RawSocketIO.connect(port)
    await sio.emit("session.start", {"type": "session.start", "config": config, **extra})
    name, data = await sio.recv_event(10)
    assert name == "session.started", (name, data)
    return sio


async def sio_connect_reset(port: int, rng: random.Random) -> None:
    (await RawSocketIO.connect(port)).reset()


async def sio_start_reset(port: int, rng: random.Random) -> None:
    (await sio_started(port, NONE)).reset()


async def sio_mid_attachment(port: int, rng: random.Random) -> None:
    """The binary event's placeholder arrives, its attachment never does (or only half of it)."""
    sio = await sio_started(port, NONE)
    await sio.ws.send_text('451-["audio",{"_placeholder":true,"num":0}]')
    if rng.random() < 0.5:
        frame = RawWS.frame(RawWS.BINARY, speech_part(rng))
        await sio.ws.send_raw(frame[: rng.randrange(1, len(frame))])
    sio.reset()


async def sio_mid_utterance(port: int, rng: random.Random, config: dict[str, Any] = NONE) -> None:
    sio = await sio_started(port, config)
    for chunk in chunks(speech_part(rng), 100):
        await sio.emit_binary("audio", chunk)
    sio.reset()


async def sio_mid_utterance_whisper(port: int, rng: random.Random) -> None:
    await sio_mid_utterance(port, rng, WHISPER)


async def sio_mid_final(port: int, rng: random.Random) -> None:
    sio = await sio_started(port, WHISPER)
    for chunk in chunks(UTTERANCE, 200):
        await sio.emit_binary("audio", chunk)
    await sio.emit("session.end", {})
    while (await sio.recv_event(10))[0] != "vad.speech_ended":
        pass
    await asyncio.sleep(rng.uniform(0.0, 0.4))
    sio.reset()


async def sio_resumable_drop(port: int, rng: random.Random) -> None:
    sio = await sio_started(port, NONE, resume=True)
    await sio.emit_binary("audio", speech_part(rng))
    sio.reset()


async def sio_clean(port: int, rng: random.Random) -> None:
    """The real python-socketio client, saying goodbye properly."""
    client = socketio.AsyncClient(reconnection=False)
    closed = asyncio.Event()
    client.on("session.closed", lambda _data: closed.set())
    await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
    try:
        await client.emit("session.start", {"config": NONE})
        for chunk in chunks(speech_part(rng), 100):
            await client.emit("audio", chunk)
        await client.emit("session.end", {})
        await asyncio.wait_for(closed.wait(), 10)
    finally:
        await client.disconnect()


SIO_CYCLES: list[tuple[Cycle, int]] = [
    (sio_connect_reset, 10),
    (sio_start_reset, 15),
    (sio_mid_attachment, 20),
    (sio_mid_utterance, 25),
    (sio_resumable_drop, 10),
    (sio_clean, 12),
]
SIO_ENGINE: list[tuple[Cycle, int]] = [(sio_mid_final, 2), (sio_mid_utterance_whisper, 1)]


# ------------------------------------------------------------------ HTTP + SSE cycles


async def raw_request(
    port: int, head: str, body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


async def sse_session(http: aiohttp.ClientSession, base: str, config: dict[str, Any]) -> str:
    async with http.post(base + "/v1/sessions", json={"config": config}) as resp:
        assert resp.status == 201, await resp.text()
        sid: str = (await resp.json())["session_id"]
        return sid


async def post_audio(http: aiohttp.ClientSession, base: str, sid: str, data: bytes) -> None:
    async with http.post(f"{base}/v1/sessions/{sid}/audio", data=data) as resp:
        assert resp.status in (204, 409), resp.status


async def sse_abandon(http: aiohttp.ClientSession, base: str, port: int, rng: random.Random) -> None:
    sid = await sse_session(http, base, NONE)
    await post_audio(http, base, sid, speech_part(rng))  # then nothing: the idle timeout ends it


async def sse_events_reset(
    http: aiohttp.ClientSession, base: str, port: int, rng: random.Random, config: dict[str, Any] = NONE
) -> None:
    sid = await sse_session(http, base, config)
    head = f"GET /v1/sessions/{sid}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    reader, writer = await raw_request(port, head)
    await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)  # headers, then session.started
    await post_audio(http, base, sid, speech_part(rng))
    reset(writer)
    if rng.random() < 0.5:  # and the client never comes back, nor ends it
        return
    async with http.delete(f"{base}/v1/sessions/{sid}") as resp:
        assert resp.status in (204, 404)


async def sse_events_reset_whisper(
    http: aiohttp.ClientSession, base: str, port: int, rng: random.Random
) -> None:
    await sse_events_reset(http, base, port, rng, WHISPER)


async def sse_audio_mid_body(http: aiohttp.ClientSession, base: str, port: int, rng: random.Random) -> None:
    sid = await sse_session(http, base, NONE)
    part = speech_part(rng)
    head = f"POST /v1/sessions/{sid}/audio HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(part)}\r\n\r\n"
    _reader, writer = await raw_request(port, head, part[: rng.randrange(1, len(part))])
    reset(writer)


async def sse_delete(http: aiohttp.ClientSession, base: str, port: int, rng: random.Random) -> None:
    sid = await sse_session(http, base, NONE)
    await post_audio(http, base, sid, speech_part(rng))
    async with http.delete(f"{base}/v1/sessions/{sid}") as resp:
        assert resp.status == 204


async def sse_mid_final(http: aiohttp.ClientSession, base: str, port: int, rng: random.Random) -> None:
    sid = await sse_session(http, base, WHISPER)
    head = f"GET /v1/sessions/{sid}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    _reader, events = await raw_request(port, head)
    for chunk in chunks(UTTERANCE, 500):
        await post_audio(http, base, sid, chunk)
    head = f"POST /v1/sessions/{sid}/end HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    _r, end = await raw_request(port, head)
    await asyncio.sleep(rng.uniform(0.0, 0.5))
    reset(end)
    reset(events)


async def sse_clean(http: aiohttp.ClientSession, base: str, port: int, rng: random.Random) -> None:
    sid = await sse_session(http, base, NONE)
    async with http.get(f"{base}/v1/sessions/{sid}/events") as stream:
        await post_audio(http, base, sid, speech_part(rng))
        async with http.post(f"{base}/v1/sessions/{sid}/end") as resp:
            assert resp.status == 200
        body = await asyncio.wait_for(stream.read(), 10)
    assert b"event: session.closed" in body


SSE_CYCLES: list[tuple[Any, int]] = [
    (sse_abandon, 15),
    (sse_events_reset, 25),
    (sse_audio_mid_body, 20),
    (sse_delete, 15),
    (sse_clean, 15),
]
SSE_ENGINE: list[tuple[Any, int]] = [(sse_mid_final, 2), (sse_events_reset_whisper, 1)]


# ------------------------------------------------------------------ the storm and the checks


async def storm(
    run: Callable[[Any, random.Random], Awaitable[None]],
    kinds: list[tuple[Any, int]],
    cycles: int,
    concurrency: int = 8,
    seed: int = 1,
) -> collections.Counter[str]:
    rng = random.Random(seed)
    plan = rng.choices([k for k, _ in kinds], weights=[w for _, w in kinds], k=cycles)
    done: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for kind in plan:
        queue.put_nowait(kind)

    async def worker(wid: int) -> None:
        wrng = random.Random(seed * 1000 + wid)
        while not queue.empty():
            kind = queue.get_nowait()
            try:
                await asyncio.wait_for(run(kind, wrng), 30)
            except (WSClosed, ConnectionError, AssertionError, TimeoutError, aiohttp.ClientError) as exc:
                failures.append(f"{kind.__name__}: {exc!r}")
            done[kind.__name__] += 1

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    assert failures == [], failures[:10]
    return done


def no_keepalive() -> aiohttp.ClientSession:
    """A client whose connections close after each request (an idle keep-alive connection is a
    live task on the hub)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


async def scrape(base: str) -> tuple[dict[str, float], dict[str, Any]]:
    async with no_keepalive() as http:
        async with http.get(base + "/metrics") as resp:
            metrics = parse_metrics(await resp.text())
        async with http.get(base + "/healthz") as resp:
            health = await resp.json()
    return metrics, health


async def settled(
    base: str, tasks: float = float("inf"), within: float = 30.0
) -> tuple[dict[str, float], dict[str, Any]]:
    """Wait until nothing is left (and no more than ``tasks`` asyncio tasks run): the final
    metrics and health."""
    deadline = time.monotonic() + within
    while True:
        metrics, health = await scrape(base)
        left = {
            "sessions": metric_sum(metrics, "asrhub_sessions_active"),
            "subscriptions": metric_sum(metrics, "asrhub_subscriptions"),
            "resumable": metric_sum(metrics, "asrhub_resumable_sessions"),
            "connections": health["connections"],
            "busy": metric_sum(metrics, "asrhub_inference_busy"),
            "queued": metric_sum(metrics, "asrhub_inference_queue_depth"),
            "tasks over baseline": max(0.0, metrics["asrhub_event_loop_tasks"] - tasks),
        }
        if not any(left.values()):
            return metrics, health
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {within} s: {left}")
        await asyncio.sleep(0.25)


async def transcribes(port: int) -> None:
    ws, _ = await ws_started(port, WHISPER)
    for chunk in chunks(UTTERANCE, 200):
        await ws.send_bytes(chunk)
    await ws.send_json({"type": "session.end"})
    events = await ws.events_until(lambda e: e["type"] == "session.closed", within=60)
    finals = [e["text"] for e in events if e["type"] == "transcript.final"]
    assert len(finals) == 1 and wer("The quick brown fox jumps over the lazy dog.", finals[0]) < 0.3, events
    await ws.close()


async def run_storm(
    hub: ServeProcess,
    transport: str,
    kinds: list[tuple[Any, int]],
    engine: list[tuple[Any, int]],
    long_run: bool,
    figures: Any,
) -> None:
    port, base = hub.port, hub.http
    scale = 10 if long_run else 1
    async with no_keepalive() as http:

        async def run(kind: Any, rng: random.Random) -> None:
            if transport == "sse":
                await kind(http, base, port, rng)
            else:
                await kind(port, rng)

        await storm(run, kinds, 60, seed=99)  # warm-up: first-use allocations, caches, pools,
        await storm(run, engine, 4, concurrency=4, seed=98)  # the engine's working memory
        idle = IDLE_TASKS[port]
        before, _ = await settled(base, idle)
        rss0, tasks0 = await hub.steady_rss_mb(), before["asrhub_event_loop_tasks"]
        started = time.monotonic()
        done = await storm(run, kinds, CYCLES[transport] * scale)
        took = time.monotonic() - started
        after, _ = await settled(base, idle)
        rss1 = await hub.steady_rss_mb()
        # The engine's working memory (CTranslate2's buffers for 4 concurrent decodes, the provider
        # subject's lanes) is reached by one engine storm as long as the measured one; the bound is
        # then on what a second, identical storm adds: a leak per decode grows it, a cache does not.
        await storm(run, engine, ENGINE_CYCLES, concurrency=4, seed=97)
        await settled(base, idle, within=60)
        rss_engine = await hub.steady_rss_mb()
        done_engine = await storm(run, engine, ENGINE_CYCLES * scale, concurrency=4, seed=2)
        after_engine, health = await settled(base, idle, within=60)
        rss2 = await hub.steady_rss_mb()
    await transcribes(port)
    figures(
        f"storm {transport}",
        f"{sum(done.values())} cycles in {took:.1f} s {dict(sorted(done.items()))}: RSS {rss0:.1f} -> "
        f"{rss1:.1f} MB, tasks {tasks0:.0f} -> {after['asrhub_event_loop_tasks']:.0f}; then "
        f"{sum(done_engine.values())} engine cycles {dict(sorted(done_engine.items()))}: "
        f"RSS {rss_engine:.1f} (after a warm-up engine storm) -> {rss2:.1f} MB, "
        f"tasks -> {after_engine['asrhub_event_loop_tasks']:.0f}; sessions, subscriptions, resumable "
        "sessions, connections, busy workers: 0",
    )
    assert rss2 - rss_engine < ENGINE_RSS_BOUND_MB, (rss_engine, rss2)
    assert health["status"] == "ok"
    assert log_errors(hub.log_lines()) == []
    assert rss1 - rss0 < RSS_BOUND_MB, (rss0, rss1)


async def test_websocket_storm(hub: ServeProcess, long_run: bool, figures: Any) -> None:
    await run_storm(hub, "websocket", WS_CYCLES, WS_ENGINE, long_run, figures)


async def test_socketio_storm(hub: ServeProcess, long_run: bool, figures: Any) -> None:
    await run_storm(hub, "socketio", SIO_CYCLES, SIO_ENGINE, long_run, figures)


async def test_sse_storm(hub: ServeProcess, long_run: bool, figures: Any) -> None:
    await run_storm(hub, "sse", SSE_CYCLES, SSE_ENGINE, long_run, figures)


def test_nothing_leaked_over_all_storms(hub: ServeProcess, figures: Any) -> None:
    """The log of the whole module: no error, no traceback, no 'Task was destroyed'."""
    lines = hub.log_lines()
    assert log_errors(lines) == []
    assert not [line for line in lines if "Traceback" in line or "never retrieved" in line]
    levels = collections.Counter(json.loads(line).get("level") for line in lines)
    figures("storms: the hub's log", f"{len(lines)} lines {dict(levels)}, no error, no traceback")
