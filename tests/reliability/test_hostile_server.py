"""Hostile clients against a real hub on 127.0.0.1 (faster-whisper, every transport), all at
once, while a healthy session streams speech: each hostile input gets its documented ``error``
code (or close code), the healthy session still gets its correct finals, nothing escapes
unhandled on the hub side (loop exception handler, unraisable and thread hooks, error logs),
and no session is left behind."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
import socketio

from tests.audio_utils import encode, fixture, load_wav, wer
from tests.transports.conftest import ServerThread

from .harness import RawSocketIO, RawWS, Watch, WSClosed, chunks, eventually, pcm_of, silence

LIMIT = 1 << 20  # Limits.max_frame_bytes
RNG = random.Random(7)
SPEECH, _ = load_wav(fixture("quick_fox.wav"))
MP3 = encode(SPEECH, 16000, "mp3")
FLAC = encode(SPEECH, 16000, "flac")
WAV = encode(SPEECH, 16000, "wav")


def start(config: dict[str, Any] | None = None, **extra: Any) -> str:
    return json.dumps({"type": "session.start", "config": config or {"provider": "none"}, **extra})


def flipped(data: bytes, n: int = 40) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        b[RNG.randrange(64, len(b))] ^= 0xFF
    return bytes(b)


@dataclass
class Case:
    """Frames to send (str: text frame, bytes: binary frame, ("raw", bytes): bytes on the
    socket), the error codes expected in order, and what follows: ``alive`` (a ping is
    answered), ``end`` (session.end → session.closed → close 1000) or ``close:<code>``."""

    name: str
    send: list[Any]
    codes: list[str]
    after: str = "alive"
    some: bool = False
    """``codes`` lists the allowed codes; at least one error, their number may vary."""
    started: bool = field(default=False)


def config(**audio: Any) -> dict[str, Any]:
    return {"provider": "none", "audio": audio}


def undecodable(name: str, encoding: str, *audio: bytes) -> Case:
    """Compressed audio its decoder cannot read: ``bad_audio`` at least once (how often depends
    on where the decoder gives up), and the session still ends normally."""
    return Case(name, [start(config(encoding=encoding)), *audio], ["bad_audio"], after="end", some=True)


WS_CASES = [
    # before any session
    Case("not JSON", ["hello"], ["bad_message"]),
    Case("a JSON array", ["[1, 2, 3]"], ["bad_message"]),
    Case("a JSON string", ['"session.start"'], ["bad_message"]),
    Case("an empty object", ["{}"], ["bad_message"]),
    Case("wrapped: action", ['{"action": "start"}'], ["bad_message"]),
    Case("wrapped: data", ['{"data": {"type": "session.start"}}'], ["bad_message"]),
    Case("type plus wrapper", ['{"type": "session.start", "data": {}}'], ["bad_message"]),
    Case("type is a number", ['{"type": 42}'], ["bad_message"]),
    Case("type is null", ['{"type": null}'], ["bad_message"]),
    Case("unknown type", ['{"type": "session.begin"}'], ["bad_message"]),
    Case("audio inside JSON", ['{"type": "audio", "data": "AAAA"}'], ["bad_message"]),
    Case("end before start", ['{"type": "session.end"}'], ["bad_message"]),
    Case("config is a list", ['{"type": "session.start", "config": []}'], ["bad_message"]),
    Case("rate as a string", [start(config(sample_rate="16000"))], ["bad_message"]),
    Case("rate 0", [start(config(sample_rate=0))], ["bad_message"]),
    Case("rate 10^12", [start(config(sample_rate=10**12))], ["bad_message"]),
    Case(
        "rate 2^64",
        ['{"type": "session.start", "config": {"audio": {"sample_rate": 1' + "0" * 20 + "}}}"],
        ["bad_message"],
    ),
    Case(
        "rate infinite",
        ['{"type": "session.start", "config": {"audio": {"sample_rate": 1e999}}}'],
        ["bad_message"],
    ),
    Case("rate fractional", [start(config(sample_rate=16000.5))], ["bad_message"]),
    Case("0 channels", [start(config(channels=0))], ["bad_message"]),
    Case("1000 channels", [start(config(channels=1000))], ["bad_message"]),
    Case("unknown encoding", [start(config(encoding="aiff"))], ["bad_message"]),
    Case("unknown provider", [start({"provider": "nope"})], ["unknown_provider"]),
    Case("none in a failover list", [start({"provider": ["whisper", "none"]})], ["bad_message"]),
    Case("aggressiveness 9", [start({"provider": "none", "vad": {"aggressiveness": 9}})], ["bad_message"]),
    Case("negative silence", [start({"provider": "none", "vad": {"silence_ms": -5}})], ["bad_message"]),
    Case(
        "NaN threshold",
        ['{"type": "session.start", "config": {"wakeword": {"threshold": NaN}}}'],
        ["bad_message"],
    ),
    Case(
        "infinite threshold",
        ['{"type": "session.start", "config": {"wakeword": {"threshold": 1e999}}}'],
        ["bad_message"],
    ),
    Case("partials as a string", [start({"provider": "none", "partials": "yes"})], ["bad_message"]),
    Case("resume as a string", [start(resume="yes")], ["bad_message"]),
    Case("resume token not a string", ['{"type": "session.resume", "token": 5}'], ["bad_message"]),
    Case("resume with an unknown token", ['{"type": "session.resume", "token": "abc"}'], ["resume_failed"]),
    Case(
        "resume, segment id a string",
        ['{"type": "session.resume", "token": "a", "last_segment_id": "1"}'],
        ["bad_message"],
    ),
    Case("3000-deep JSON", ["[" * 3000], ["bad_message"]),
    Case("70 KB of JSON", [json.dumps({"type": "ping", "id": "x" * 70_000})], ["too_large"]),
    Case("audio before start", [os.urandom(3200)] * 5, ["bad_message"]),  # told once
    Case("invalid UTF-8 text", [("raw", RawWS.frame(RawWS.TEXT, b"\xff\xfe{}"))], [], after="close:1007"),
    Case(
        "a fragment that never ends",
        [("raw", RawWS.frame(RawWS.TEXT, b'{"ty', fin=False)), ("raw", RawWS.frame(RawWS.BINARY, b"x"))],
        [],
        after="close:1002",
    ),
    # inside a session
    Case("odd byte counts", [start(), b"\x01" * 3, b"\x02", os.urandom(4001)], ["bad_audio"], after="end"),
    Case(
        "NaN and inf in float audio",
        [start(config(encoding="pcm_f32le")), np.array([np.nan, np.inf, -np.inf, 0.5] * 400, "<f4").data],
        ["bad_audio"],
    ),
    Case("a frame over the limit", [start(), bytes(LIMIT + 2)], ["too_large"]),
    Case("a frame over twice the limit", [start(), bytes(2 * LIMIT + 2)], [], after="close:1009"),
    Case("garbage WAV header", [start(config(encoding="wav")), os.urandom(999), b"x" * 99], ["bad_audio"]),
    Case("truncated WAV header", [start(config(encoding="wav")), WAV[:30]], ["bad_audio"], after="end"),
    undecodable("random bytes as Opus", "opus", os.urandom(8000)),
    undecodable("random bytes as WebM", "webm", os.urandom(8000)),
    undecodable("corrupt MP3", "mp3", *chunks(flipped(MP3, 400), 50)),
    undecodable("corrupt FLAC", "flac", flipped(FLAC, 400)),
    undecodable("MP3 declared as FLAC", "flac", MP3),
    Case("start twice", [start(), start()], ["bad_message"]),
    Case("odd rate, 7 channels", [start(config(sample_rate=383_999, channels=7)), os.urandom(14 * 3001)], []),
    Case(
        "audio after session.end",
        [start({"language": "en"}), pcm_of("quick_fox.wav")[:32000], '{"type": "session.end"}', bytes(3200)],
        ["bad_message"],
        after="end",
    ),
]


async def run_ws_case(port: int, case: Case) -> str | None:
    """None when the case behaved as documented, else what went wrong."""
    ws = await RawWS.connect(port)
    got: list[str] = []
    try:
        for item in case.send:
            if isinstance(item, tuple):
                await ws.send_raw(item[1])
            elif isinstance(item, str):
                await ws.send_text(item)
            else:
                await ws.send_bytes(bytes(item))
        if case.after.startswith("close:"):
            try:
                while True:
                    event = await ws.recv_json(15)
                    if event["type"] == "error":
                        got.append(event["code"])
            except WSClosed as closed:
                code = str(closed.code)
            return None if code == case.after[6:] and got == case.codes else f"closed {code}, errors {got}"
        if case.after == "end":
            await ws.send_text('{"type": "session.end"}')
        marker = {"type": "ping", "id": f"after:{case.name}"}
        if case.after == "alive":
            await ws.send_json(marker)
        ponged = False
        async with asyncio.timeout(30):
            while True:
                try:  # a pong answers at once; the session's events follow through its queue
                    event = await ws.recv_json(0.5 if ponged and len(got) >= len(case.codes) else 30)
                except TimeoutError:
                    break
                if event["type"] == "error":
                    got.append(event["code"])
                    if event.get("fatal"):
                        return f"fatal error {event}"
                if event == {"type": "pong", "id": marker["id"]}:
                    ponged = True
                if event["type"] == "session.closed" and case.after == "end":
                    with_close = await ws.events_until(lambda _e: False, within=5)
                    assert not with_close and ws.close_code == 1000, (with_close, ws.close_code)
                    break
        if case.some:
            return None if got and set(got) <= set(case.codes) and len(got) <= 6 else f"errors {got}"
        return None if got == case.codes else f"errors {got}"
    except (WSClosed, TimeoutError, ConnectionError, AssertionError) as exc:
        return f"{type(exc).__name__}: {exc} after errors {got}"
    finally:
        if case.after == "alive":
            await ws.close()
        else:
            ws.writer.close()


# ------------------------------------------------------------------ Socket.io


async def sio_cases(port: int) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    client = socketio.AsyncClient(reconnection=False)
    events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    for kind in ("error", "pong", "session.started"):
        client.on(kind, lambda data, kind=kind: events.put_nowait((kind, data)))
    await client.connect(f"http://127.0.0.1:{port}", transports=["websocket"])

    async def expect(name: str, send: Callable[[], Awaitable[None]], code: str) -> None:
        await send()
        kind, data = await asyncio.wait_for(events.get(), 15)
        good = kind == "error" and data["code"] == code and not data["fatal"]
        out[name] = None if good else f"{kind} {data}"

    try:
        await expect("sio: audio before start", lambda: client.emit("audio", b"\0" * 320), "bad_message")
        await expect("sio: unknown event", lambda: client.emit("start", {"type": "start"}), "bad_message")
        await expect("sio: payload is a list", lambda: client.emit("session.start", [1, 2]), "bad_message")
        await expect(
            "sio: type differs from event",
            lambda: client.emit("session.start", {"type": "session.end"}),
            "bad_message",
        )
        bad_config = {"config": {"audio": {"channels": 0}}}
        await expect("sio: bad config", lambda: client.emit("session.start", bad_config), "bad_message")
        await client.emit("session.start", {"config": {"provider": "none"}})
        kind, _ = await asyncio.wait_for(events.get(), 15)
        out["sio: start after refusals"] = None if kind == "session.started" else kind
        await expect("sio: base64 audio", lambda: client.emit("audio", "UklGRiQAAABXQVZF"), "bad_message")
        await expect("sio: audio over the limit", lambda: client.emit("audio", bytes(LIMIT + 2)), "too_large")
        await client.emit("ping", {"id": "still"})
        kind, data = await asyncio.wait_for(events.get(), 15)
        alive = (kind, data) == ("pong", {"type": "pong", "id": "still"})
        out["sio: alive"] = None if alive else f"{kind} {data}"
    finally:
        await client.disconnect()
    # Raw Socket.IO packets python-socketio would never send: each is answered in band.
    raw_packets = {
        "sio raw: 3000-deep payload": ['42["ping",' + "[" * 3000 + "]" * 3000 + "]"],
        "sio raw: invalid JSON": ["42{nonsense"],
        "sio raw: event not a list": ['42{"type": "ping"}'],
        "sio raw: empty event": ["42[]"],
        "sio raw: event name a number": ["42[7, {}]"],
        "sio raw: unknown packet type": ["49hello"],
        "sio raw: placeholder past the attachments": ['451-["audio",{"_placeholder":true,"num":7}]', b"x"],
        "sio raw: a binary frame with no event before it": [b"451" + bytes(317)],
    }
    for name, packets in raw_packets.items():
        raw = await RawSocketIO.connect(port)
        try:
            await raw.emit("session.start", {"config": {"provider": "none"}})
            assert (await raw.recv_event(10))[0] == "session.started"
            for item in packets:
                await (raw.ws.send_text(item) if isinstance(item, str) else raw.ws.send_bytes(item))
            kind, data = await raw.recv_event(10)
            await raw.emit("ping", {"id": name})
            alive = await raw.recv_event(10)
            good = kind == "error" and data["code"] == "bad_message" and not data["fatal"]
            out[name] = None if good and alive[0] == "pong" else f"{kind} {data} then {alive}"
        except (WSClosed, TimeoutError, AssertionError) as exc:
            out[name] = repr(exc)
        finally:
            raw.reset()
    # Audio still in flight when the hub closed the namespace (a session that ended or was
    # handed over): python-socketio refuses it, and the hub logs one line, not a traceback.
    raw = await RawSocketIO.connect(port)
    try:
        await raw.emit("session.start", {"config": {"provider": "none"}})
        assert (await raw.recv_event(10))[0] == "session.started"
        await raw.ws.send_text("41")
        await raw.ws.send_text('451-["audio",{"_placeholder":true,"num":0}]')
        await raw.ws.send_bytes(b"\0" * 320)
        await raw.ws.send_text("40")  # connect again: answered once every frame before it was read
        answer = await raw.recv_packet(10)
        out["sio raw: audio after the namespace closed"] = None if answer.startswith("40") else answer
    except (WSClosed, TimeoutError) as exc:
        out["sio raw: audio after the namespace closed"] = repr(exc)
    finally:
        raw.reset()
    for name, item in (("eio raw: unknown packet type", "9hello"), ("eio raw: empty packet", "")):
        raw = await RawSocketIO.connect(port)
        try:  # below Socket.IO: engine.io ignores it or drops the client, and logs no error
            await raw.ws.send_text(item)
            await raw.emit("ping", {"id": name})
            out[name] = None if (await raw.recv_event(5))[0] in ("error", "pong") else "unexpected"
        except (WSClosed, TimeoutError):
            out[name] = None
        finally:
            raw.reset()
    return out


# ------------------------------------------------------------------ HTTP


async def http_cases(base: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    async with aiohttp.ClientSession() as http:

        async def check(name: str, method: str, path: str, status: int, code: str, **kw: Any) -> None:
            async with http.request(method, base + path, **kw) as resp:
                body = await resp.json(content_type=None)
            found = body.get("code") or body.get("error", {}).get("code")
            out[name] = None if (resp.status, found) == (status, code) else f"{resp.status} {body}"

        await check("http: session body not JSON", "POST", "/v1/sessions", 400, "bad_message", data=b"hello")
        await check(
            "http: session config 0 channels",
            "POST",
            "/v1/sessions",
            400,
            "bad_message",
            json={"config": {"audio": {"channels": 0}}},
        )
        await check(
            "http: audio to an unknown session",
            "POST",
            "/v1/sessions/nope/audio",
            404,
            "bad_message",
            data=b"\0" * 320,
        )
        await check(
            "http: events of an unknown session", "GET", "/v1/sessions/nope/events", 404, "bad_message"
        )
        async with http.post(base + "/v1/sessions", json={"config": {"provider": "none"}}) as resp:
            sid = (await resp.json())["session_id"]
        await check(
            "http: audio frame over the limit",
            "POST",
            f"/v1/sessions/{sid}/audio",
            413,
            "too_large",
            data=io.BytesIO(bytes(LIMIT + 1)),
        )
        await check(
            "http: garbage to /v1/transcribe",
            "POST",
            "/v1/transcribe",
            400,
            "bad_audio",
            data=os.urandom(4000),
        )
        async with http.post(base + "/v1/transcribe", data=flipped(MP3, 300)) as resp:  # what survives
            body = await resp.json()
            refused = (resp.status, body.get("code")) in ((400, "bad_audio"), (413, "too_large"))
            good = resp.status == 200 or refused
            out["http: corrupt MP3 to /v1/transcribe"] = None if good else f"{resp.status} {body}"
        await check("http: empty /v1/transcribe", "POST", "/v1/transcribe", 400, "bad_message", data=b"")
        form = aiohttp.FormData()
        form.add_field("file", os.urandom(5000), filename="x.mp3")
        form.add_field("model", "whisper")
        await check("openai: garbage file", "POST", "/v1/audio/transcriptions", 400, "bad_audio", data=form)
        async with http.delete(f"{base}/v1/sessions/{sid}") as resp:
            out["http: delete"] = None if resp.status == 204 else str(resp.status)
    return out


# ------------------------------------------------------------------ the test


async def healthy_session(port: int) -> list[dict[str, Any]]:
    pcm = pcm_of("quick_fox.wav") + silence(1.0) + pcm_of("weather_question.wav") + silence(1.0)
    ws = await RawWS.connect(port)
    await ws.send_json({"type": "session.start", "config": {"language": "en"}})
    for chunk in chunks(pcm, 100):
        await ws.send_bytes(chunk)
        await asyncio.sleep(0.01)  # ~10x real time, so it overlaps the hostile clients
    await ws.send_json({"type": "session.end"})
    events = await ws.events_until(lambda e: e["type"] == "session.closed", within=60)
    await ws.close()
    return events


async def test_hostile_clients_get_their_codes_and_a_healthy_session_is_served(
    hub_server: ServerThread, watch: Watch, figures: Any
) -> None:
    port = hub_server.port
    healthy = asyncio.create_task(healthy_session(port))
    ws_results = await asyncio.gather(*(run_ws_case(port, case) for case in WS_CASES))
    results = {case.name: result for case, result in zip(WS_CASES, ws_results, strict=True)}
    results |= await sio_cases(port)
    results |= await http_cases(hub_server.http)
    events = await healthy
    failures = {name: why for name, why in results.items() if why is not None}
    assert failures == {}
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert [e["type"] for e in events if e["type"] == "error"] == []
    assert len(finals) == 2, finals
    assert wer("The quick brown fox jumps over the lazy dog.", finals[0]["text"]) < 0.3
    assert wer("What will the weather be like in Boston tomorrow afternoon?", finals[1]["text"]) < 0.3

    async def no_sessions() -> bool:
        return await asyncio.to_thread(hub_server.open_sessions) == 0

    assert await eventually(no_sessions, 10)
    # A corrupt file is refused with a logged reason, never an error-level line.
    assert watch.errors() == []
    figures("hostile inputs over real transports (WS, Socket.io, HTTP)", f"{len(results)} cases")
