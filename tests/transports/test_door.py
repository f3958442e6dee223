"""One door (issue 22): every protocol × every wrong way in, against one real hub.

One :class:`ServerThread` (faster-whisper tiny.en, keys required) serves the HTTP port — native
WebSocket, Socket.io, HTTP+SSE, the OpenAI API, Deepgram live and pre-recorded, OpenAI
Realtime — and, started by the application itself as ``asrhub serve`` starts them, gRPC and
Wyoming. Each test sends one kind of bad client to every protocol at once — no key, a wrong key,
another key's session, no first message, a client that never reads, an oversized message,
malformed and 10,000-deep JSON, a connection flood from one address — and checks that each gets
its protocol's own error or close and nothing is served, while keyed clients are served on every
protocol at the same time (:func:`served_everywhere`: exactly its own sessions are opened), and
that afterwards no session, gate ticket, connection or task is left and nothing was logged at
error level (no traceback).

The limits are small so that it is quick: the first message within 2 s, 3 s of idleness,
64 KiB frames, 200 kB uploads, 24 connections per client address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
import socketio
from google.cloud import speech_v1
from google.longrunning import operations_pb2, operations_pb2_grpc
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event

from asrhub.transports.common import CONNECTIONS
from asrhub.transports.door import DOOR
from tests.audio_utils import fixture, wer
from tests.reliability.harness import RawSocketIO, RawWS, Watch, WSClosed

from .conftest import KEY, OTHER_KEY, ServerThread, finals_text, frames, free_port, make_settings, speech

WRONG = "not-a-key"
START_S = 2.0
IDLE_S = 3.0
FRAME = 64 * 1024
UPLOAD = 200_000
PER_ADDRESS = 24
FLOODER = "127.0.0.2"  # another loopback address: another client address to the hub
PCM, TEXT = speech("quick_fox.wav")
WAV = fixture("quick_fox.wav").read_bytes()
DEEP = "[" * 10_000
SPEECH_SERVICE = "/google.cloud.speech.v1.Speech"
Encoding = speech_v1.RecognitionConfig.AudioEncoding
HEALTHY_SESSIONS = 7
"""Hub sessions one round of :func:`served_everywhere` opens (the OpenAI and Deepgram uploads
and gRPC ``Recognize`` use none: they transcribe a file)."""


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@pytest.fixture(scope="module")
def door() -> Iterator[ServerThread]:
    settings = make_settings(
        keys=(KEY, OTHER_KEY),
        server={
            "heartbeat_s": 0.5,
            "max_upload_bytes": UPLOAD,
            "max_connections_per_address": PER_ADDRESS,
            "grpc_port": free_port(),
            "wyoming_port": free_port(),
            "wyoming_max_sessions": 2,
        },
        limits={
            "start_timeout_s": START_S,
            "idle_timeout_s": IDLE_S,
            "max_frame_bytes": FRAME,
            "resume_window_s": 2.0,
        },
    )
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def baseline(door: ServerThread) -> int:
    """The server loop's task count at rest, after one healthy round (caches, pools warm)."""

    async def warm() -> None:
        await served_everywhere(door)

    asyncio.run(warm())
    asyncio.run(nothing_left(door, None))
    return door.call(lambda: len(asyncio.all_tasks(door.loop)))


@pytest.fixture
def watch(door: ServerThread, baseline: int) -> Iterator[Watch]:
    with Watch(door.loop) as w:
        yield w
    assert not w.errors(), "\n".join(w.errors())


def state(door: ServerThread) -> dict[str, int]:
    def read() -> dict[str, int]:
        gate = door.app[DOOR].gate
        return {
            "sessions": len(door.hub.sessions),
            "gate": len(gate),
            "connections": len(door.app[CONNECTIONS]),
            "tasks": len(asyncio.all_tasks(door.loop)),
        }

    return door.call(read)


async def nothing_left(door: ServerThread, tasks: int | None, within: float = 20.0) -> None:
    """No session, no gate ticket, no streaming connection, no more tasks than at rest."""
    deadline = time.monotonic() + within
    while True:
        now = await asyncio.to_thread(state, door)
        clean = not now["sessions"] and not now["gate"] and not now["connections"]
        if clean and (tasks is None or now["tasks"] <= tasks):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {now} (tasks at rest: {tasks})")
        await asyncio.sleep(0.05)


def opened(door: ServerThread) -> int:
    return door.call(lambda: door.hub.opened_total)


@contextlib.asynccontextmanager
async def meanwhile_served(
    door: ServerThread, baseline: int, *, own: int = 0, settle: bool = True
) -> AsyncIterator[None]:
    """Run the body while keyed clients are served on every protocol; then only their
    sessions (and ``own``, those the body opens on purpose) were opened, and (``settle``)
    nothing is left."""
    before = await asyncio.to_thread(opened, door)
    healthy = asyncio.create_task(served_everywhere(door))
    try:
        yield
    finally:
        texts = await asyncio.wait_for(healthy, 120)
    for protocol, text in texts.items():
        assert wer(TEXT, text) <= 0.3, (protocol, text)
    assert await asyncio.to_thread(opened, door) - before == HEALTHY_SESSIONS + own
    if settle:
        await nothing_left(door, baseline)


# ------------------------------------------------------------------ keyed clients, every protocol


async def ws_served(door: ServerThread) -> str:
    async with aiohttp.ClientSession() as http, http.ws_connect(door.ws, headers=bearer(KEY)) as ws:
        await ws.send_json({"type": "session.start", "config": {}})
        assert (await ws.receive_json())["type"] == "session.started"
        for frame in frames(PCM):
            await ws.send_bytes(frame)
        await ws.send_json({"type": "session.end"})
        events = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
    return finals_text(events)


async def sio_served(door: ServerThread) -> str:
    client = socketio.AsyncClient(reconnection=False)
    texts: list[str] = []
    closed = asyncio.Event()
    client.on("transcript.final", lambda data: texts.append(data["text"]))
    client.on("session.closed", lambda _data: closed.set())
    await client.connect(door.http, auth={"token": KEY}, transports=["websocket"])
    try:
        await client.emit("session.start", {"config": {}})
        for frame in frames(PCM, 500):
            await client.emit("audio", frame)
        await client.emit("session.end", {})
        await asyncio.wait_for(closed.wait(), 60)
    finally:
        await client.disconnect()
    return " ".join(texts)


async def sse_served(door: ServerThread) -> str:
    async with aiohttp.ClientSession(headers=bearer(KEY)) as http:
        async with http.post(f"{door.http}/v1/sessions", json={"config": {}}) as r:
            sid = (await r.json())["session_id"]
        async with http.get(f"{door.http}/v1/sessions/{sid}/events") as events:
            for frame in frames(PCM, 500):
                async with http.post(f"{door.http}/v1/sessions/{sid}/audio", data=frame) as r:
                    assert r.status == 204
            async with http.post(f"{door.http}/v1/sessions/{sid}/end") as r:
                assert r.status == 200
            body = (await events.read()).decode()
    return " ".join(
        json.loads(line[6:])["text"]
        for line in body.splitlines()
        if line.startswith('data: {"type":"transcript.final"')
    )


async def openai_served(door: ServerThread) -> str:
    form = aiohttp.FormData()
    form.add_field("file", WAV, filename="quick_fox.wav", content_type="audio/wav")
    form.add_field("model", "whisper-1")
    async with aiohttp.ClientSession(headers=bearer(KEY)) as http:
        async with http.post(f"{door.http}/v1/audio/transcriptions", data=form) as r:
            assert r.status == 200
            return str((await r.json())["text"])


def listen_url(door: ServerThread) -> str:
    return f"ws://127.0.0.1:{door.port}/v1/listen?encoding=linear16&sample_rate=16000"


async def dg_live_served(door: ServerThread) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(listen_url(door), headers={"Authorization": f"Token {KEY}"}) as ws:
            for frame in frames(PCM):
                await ws.send_bytes(frame)
            await ws.send_str('{"type": "CloseStream"}')
            messages = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
    return " ".join(
        m["channel"]["alternatives"][0]["transcript"]
        for m in messages
        if m["type"] == "Results" and m["is_final"]
    )


async def dg_pre_served(door: ServerThread) -> str:
    async with aiohttp.ClientSession(headers={"Authorization": f"Token {KEY}"}) as http:
        async with http.post(f"{door.http}/v1/listen", data=WAV) as r:
            assert r.status == 200
            return str((await r.json())["results"]["channels"][0]["alternatives"][0]["transcript"])


def realtime_url(door: ServerThread) -> str:
    return f"ws://127.0.0.1:{door.port}/v1/realtime?intent=transcription"


REALTIME_16K = {
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
    },
}


async def realtime_served(door: ServerThread) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(realtime_url(door), headers=bearer(KEY)) as ws:
            assert (await ws.receive_json())["type"] == "session.created"
            await ws.send_json(REALTIME_16K)
            assert (await ws.receive_json())["type"] == "session.updated"
            for frame in frames(PCM + bytes(32_000)):
                await ws.send_json(
                    {"type": "input_audio_buffer.append", "audio": base64.b64encode(frame).decode()}
                )
            await ws.send_json({"type": "input_audio_buffer.commit"})  # flush now: no idle wait for the VAD
            seen = []
            async with asyncio.timeout(60):
                async for msg in ws:
                    message = json.loads(msg.data)
                    seen.append(message)
                    if message["type"] == "conversation.item.input_audio_transcription.completed":
                        return str(message["transcript"])
            raise AssertionError(f"no transcript: {seen}")


def grpc_address(door: ServerThread) -> str:
    return f"127.0.0.1:{door.settings.server.grpc_port}"


def streaming(channel: grpc.aio.Channel) -> Any:
    return channel.stream_stream(
        f"{SPEECH_SERVICE}/StreamingRecognize",
        request_serializer=speech_v1.StreamingRecognizeRequest.serialize,
        response_deserializer=speech_v1.StreamingRecognizeResponse.deserialize,
    )


def recognize(channel: grpc.aio.Channel) -> Any:
    return channel.unary_unary(
        f"{SPEECH_SERVICE}/Recognize",
        request_serializer=speech_v1.RecognizeRequest.serialize,
        response_deserializer=speech_v1.RecognizeResponse.deserialize,
    )


CONFIG = speech_v1.RecognitionConfig(
    encoding=Encoding.LINEAR16, sample_rate_hertz=16_000, language_code="en-US"
)


async def stream_requests(pcm: bytes) -> AsyncIterator[speech_v1.StreamingRecognizeRequest]:
    yield speech_v1.StreamingRecognizeRequest(
        streaming_config=speech_v1.StreamingRecognitionConfig(config=CONFIG)
    )
    for frame in frames(pcm):
        yield speech_v1.StreamingRecognizeRequest(audio_content=frame)


def first_request() -> speech_v1.StreamingRecognizeRequest:
    return speech_v1.StreamingRecognizeRequest(
        streaming_config=speech_v1.StreamingRecognitionConfig(config=CONFIG)
    )


async def stream_status(
    channel: grpc.aio.Channel,
    requests: list[speech_v1.StreamingRecognizeRequest],
    metadata: list[tuple[str, str]],
    *,
    half_close: bool = True,
) -> tuple[grpc.StatusCode, str]:
    """How a StreamingRecognize call that sends ``requests`` ends (its status and details), as
    the server said it (written one by one: a write after the server ended the call says so)."""
    call = streaming(channel)(metadata=metadata)
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        for request in requests:
            await call.write(request)
        if half_close:
            await call.done_writing()
        async for _ in call:
            pass
    return await call.code(), await call.details() or ""


async def grpc_served(door: ServerThread) -> str:
    async with grpc.aio.insecure_channel(grpc_address(door)) as channel:
        call = streaming(channel)(stream_requests(PCM), metadata=[("authorization", f"Bearer {KEY}")])
        texts = [
            r.results[0].alternatives[0].transcript async for r in call if r.results and r.results[0].is_final
        ]
    return " ".join(texts)


def wyoming_port(door: ServerThread) -> int:
    return door.settings.server.wyoming_port


async def wyoming_served(door: ServerThread) -> str:
    async with AsyncTcpClient("127.0.0.1", wyoming_port(door)) as client:
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        for frame in frames(PCM):
            await client.write_event(AudioChunk(rate=16_000, width=2, channels=1, audio=frame).event())
        await client.write_event(AudioStop().event())
        async with asyncio.timeout(60):
            while (event := await client.read_event()) is not None:
                if Transcript.is_type(event.type):
                    return Transcript.from_event(event).text
    raise AssertionError("no transcript")


SERVED: dict[str, Callable[[ServerThread], Awaitable[str]]] = {
    "websocket": ws_served,
    "socketio": sio_served,
    "sse": sse_served,
    "openai": openai_served,
    "deepgram live": dg_live_served,
    "deepgram pre-recorded": dg_pre_served,
    "realtime": realtime_served,
    "grpc": grpc_served,
    "wyoming": wyoming_served,
}


async def served_everywhere(door: ServerThread) -> dict[str, str]:
    """One keyed client per protocol, all at once: each transcript."""
    texts = await asyncio.gather(*(serve(door) for serve in SERVED.values()))
    return dict(zip(SERVED, texts, strict=True))


# ------------------------------------------------------------------ raw probes


async def raw_http(
    port: int, request: bytes, *, source: str | None = None, within: float = 10.0
) -> tuple[bytes, float]:
    """Send ``request`` bytes on a new connection, read until the hub closes it: (what came
    back, seconds it took). A reset counts as a close."""
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0) if source else None
    )
    received = b""
    try:
        if request:
            writer.write(request)
            await writer.drain()
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionError:
        pass
    finally:
        writer.close()
    return received, time.monotonic() - start


async def ws_closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[list[dict[str, Any]], int | None]:
    """Every JSON message until the close, and the close code."""
    messages = []
    async with asyncio.timeout(20):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                messages.append(json.loads(msg.data))
    return messages, ws.close_code


async def wyoming_exchange(door: ServerThread, raw: bytes, *, source: str | None = None) -> list[Event]:
    """Send raw bytes to Wyoming, read its events until it closes the connection."""
    for attempt in range(3):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", wyoming_port(door), local_addr=(source, 0) if source else None
            )
            break
        except ConnectionResetError:  # reset in the handshake, before any byte: the kernel's
            if attempt == 2:  # (an ephemeral port that a closed connection's TIME_WAIT holds)
                raise
    events: list[Event] = []
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(20):
            while line := await reader.readline():
                header = json.loads(line)
                data = header.get("data", {})
                if header.get("data_length"):
                    data.update(json.loads(await reader.readexactly(header["data_length"])))
                if header.get("payload_length"):
                    await reader.readexactly(header["payload_length"])
                events.append(Event(type=header["type"], data=data))
    except ConnectionError:
        pass
    finally:
        writer.close()
    return events


def wyoming_codes(events: list[Event]) -> list[str | None]:
    return [Error.from_event(e).code for e in events if Error.is_type(e.type)]


def get(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def line(header: dict[str, Any]) -> bytes:
    return json.dumps(header).encode() + b"\n"


# ------------------------------------------------------------------ no key, wrong key


@pytest.mark.parametrize("key", [None, WRONG], ids=["no-key", "wrong-key"])
async def test_no_key_or_a_wrong_key_is_refused_in_each_protocols_shape(
    door: ServerThread, baseline: int, watch: Watch, key: str | None
) -> None:
    async def ws() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(door.ws, headers=bearer(key)) as ws:
            await ws.send_json({"type": "session.start", "config": {}})
            messages, code = await ws_closed_with(ws)
        assert messages[0]["code"] == "unauthorized" and code == 4401

    async def sio() -> None:
        client = socketio.AsyncClient(reconnection=False)
        refused: list[Any] = []
        client.on("connect_error", refused.append)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(door.http, auth={"token": key} if key else None, transports=["websocket"])
        await client.disconnect()
        assert refused[0]["data"]["code"] == "unauthorized"
        if key is not None:  # a key on the Engine.IO handshake itself is checked there
            async with aiohttp.ClientSession() as http:
                url = f"{door.http}/socket.io/?EIO=4&transport=polling&token={key}"
                async with http.get(url) as r:
                    assert r.status == 401 and (await r.json())["data"]["code"] == "unauthorized"

    async def http_refusal(method: str, path: str, data: Any, headers: dict[str, str]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.request(method, door.http + path, data=data, headers=headers) as r:
                assert r.status == 401, path
                return dict(await r.json())

    async def sse() -> None:
        assert (await http_refusal("POST", "/v1/sessions", b"{}", bearer(key)))["code"] == "unauthorized"

    async def openai() -> None:
        body = await http_refusal("POST", "/v1/audio/transcriptions", WAV, bearer(key))
        assert body["error"]["code"] == "unauthorized"

    async def dg_pre() -> None:
        headers = {"Authorization": f"Token {key}"} if key else {}
        assert (await http_refusal("POST", "/v1/listen", WAV, headers))["err_code"] == "INVALID_AUTH"

    async def dg_live() -> None:
        headers = {"Authorization": f"Token {key}"} if key else {}
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(listen_url(door), headers=headers)
        assert refused.value.status == 401

    async def realtime() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(realtime_url(door), headers=bearer(key)) as ws,
        ):
            messages, code = await ws_closed_with(ws)
        assert messages[0]["error"]["code"] == "invalid_api_key" and code == 1008

    async def grpc_calls() -> None:
        metadata = [("authorization", f"Bearer {key}")] if key else []
        async with grpc.aio.insecure_channel(grpc_address(door)) as channel:
            # refused before anything is read (a write racing the refusal fails client-side)
            stream, _ = await stream_status(channel, [], metadata, half_close=False)
            request = speech_v1.RecognizeRequest(config=CONFIG, audio=speech_v1.RecognitionAudio(content=PCM))
            with pytest.raises(grpc.aio.AioRpcError) as unary_refused:
                await recognize(channel)(request, metadata=metadata)
        assert stream == unary_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    async with meanwhile_served(door, baseline):
        await asyncio.gather(ws(), sio(), sse(), openai(), dg_pre(), dg_live(), realtime(), grpc_calls())


# ------------------------------------------------------------------ another key's session


async def test_another_keys_session_or_operation_does_not_exist_for_you(
    door: ServerThread, baseline: int, watch: Watch
) -> None:
    async def sse() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{door.http}/v1/sessions", json={"config": {}}, headers=bearer(KEY)) as r:
                sid = (await r.json())["session_id"]
            base = f"{door.http}/v1/sessions/{sid}"
            for method, url, data in (
                ("POST", f"{base}/audio", bytes(3200)),
                ("POST", f"{base}/update", b'{"config": {}}'),
                ("GET", f"{base}/events", None),
                ("POST", f"{base}/end", None),
                ("DELETE", base, None),
            ):
                async with http.request(method, url, data=data, headers=bearer(OTHER_KEY)) as r:
                    assert r.status == 404 and (await r.json())["code"] == "bad_message", (method, url)
            async with http.delete(base, headers=bearer(KEY)) as r:
                assert r.status == 204

    async def ws_resume() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(door.ws, headers=bearer(KEY)) as mine:
                await mine.send_json(
                    {"type": "session.start", "config": {"provider": "none"}, "resume": True}
                )
                token = (await mine.receive_json())["resume_token"]
                async with http.ws_connect(door.ws, headers=bearer(OTHER_KEY)) as theirs:
                    await theirs.send_json({"type": "session.resume", "token": token})
                    assert (await theirs.receive_json())["code"] == "resume_failed"
                await mine.send_json({"type": "session.end"})
                await ws_closed_with(mine)

    async def sio_resume() -> None:
        mine = await RawSocketIO.connect(door.port, {"token": KEY})
        await mine.emit("session.start", {"config": {"provider": "none"}, "resume": True})
        _, started = await mine.recv_event()
        theirs = await RawSocketIO.connect(door.port, {"token": OTHER_KEY})
        await theirs.emit("session.resume", {"token": started["resume_token"]})
        name, error = await theirs.recv_event()
        assert name == "error" and error["code"] == "resume_failed"
        await theirs.ws.close()
        await mine.emit("session.end", {})
        with contextlib.suppress(WSClosed):
            while (await mine.recv_event())[0] != "session.closed":
                pass
        await mine.ws.close()

    async def grpc_operation() -> None:
        async with grpc.aio.insecure_channel(grpc_address(door)) as channel:
            start = channel.unary_unary(
                f"{SPEECH_SERVICE}/LongRunningRecognize",
                request_serializer=speech_v1.LongRunningRecognizeRequest.serialize,
                response_deserializer=operations_pb2.Operation.FromString,
            )
            request = speech_v1.LongRunningRecognizeRequest(
                config=CONFIG, audio=speech_v1.RecognitionAudio(content=PCM)
            )
            operation = await start(request, metadata=[("x-goog-api-key", KEY)])
            stub = operations_pb2_grpc.OperationsStub(channel)
            for call, message in (
                (stub.GetOperation, operations_pb2.GetOperationRequest(name=operation.name)),
                (stub.CancelOperation, operations_pb2.CancelOperationRequest(name=operation.name)),
                (stub.DeleteOperation, operations_pb2.DeleteOperationRequest(name=operation.name)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as other:
                    await call(message, metadata=[("x-goog-api-key", OTHER_KEY)])
                assert other.value.code() == grpc.StatusCode.NOT_FOUND
            listed = await stub.ListOperations(
                operations_pb2.ListOperationsRequest(name=""), metadata=[("x-goog-api-key", OTHER_KEY)]
            )
            assert operation.name not in [o.name for o in listed.operations]
            await stub.DeleteOperation(
                operations_pb2.DeleteOperationRequest(name=operation.name), metadata=[("x-goog-api-key", KEY)]
            )

    async with meanwhile_served(door, baseline, own=3):  # the three sessions another key tries
        await asyncio.gather(sse(), ws_resume(), sio_resume(), grpc_operation())


# ------------------------------------------------------------------ no first message


async def test_a_client_that_says_nothing_is_closed_at_the_start_deadline(
    door: ServerThread, baseline: int, watch: Watch
) -> None:
    """``limits.start_timeout_s`` (2 s here) on every protocol, whatever else the client does
    meanwhile (pings do not count); ``limits.idle_timeout_s`` (3 s) for a stalled body and
    between sessions."""

    async def ws() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(door.ws, headers=bearer(KEY)) as ws:
            started = time.monotonic()
            await ws.send_json({"type": "ping", "id": 1})
            messages, code = await ws_closed_with(ws)
        assert messages[0]["type"] == "pong"
        assert messages[1]["code"] == "timeout" and messages[1]["fatal"] and code == 4408
        assert START_S * 0.9 <= time.monotonic() - started < START_S + 5

    async def engineio_handshake_only() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{door.http}/socket.io/?EIO=4&transport=polling") as r:
                sid = json.loads((await r.text())[1:])["sid"]
            await asyncio.sleep(START_S + 1.0)
            async with http.get(f"{door.http}/socket.io/?EIO=4&transport=polling&sid={sid}") as r:
                assert r.status == 400  # the socket is gone

    async def sio_connected_without_a_session() -> None:
        client = await RawSocketIO.connect(door.port, {"token": KEY})
        name, error = await client.recv_event(10)
        assert name == "error" and error["code"] == "timeout"
        with pytest.raises(WSClosed):
            await client.recv_event(10)
        client.ws.writer.close()

    async def tcp_silence() -> None:
        received, took = await raw_http(door.port, b"")
        assert received == b"" and START_S * 0.9 <= took < START_S + 5

    async def stalled_body() -> None:
        head = (
            f"POST /v1/transcribe HTTP/1.1\r\nHost: 127.0.0.1:{door.port}\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: audio/wav\r\nContent-Length: 100000\r\n\r\n"
        ).encode()
        received, took = await raw_http(door.port, head + WAV[:1000])
        assert not received.startswith(b"HTTP/1.1 200") and IDLE_S * 0.9 <= took < IDLE_S + 5

    async def dg_live() -> None:  # its session opens at the handshake: the session's idle clock
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(listen_url(door), headers={"Authorization": f"Token {KEY}"}) as ws:
                messages, code = await ws_closed_with(ws)
        assert messages[0]["type"] == "Error" and messages[0]["variant"] == "timeout" and code == 1011

    async def realtime() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(realtime_url(door), headers=bearer(KEY)) as ws,
        ):
            messages, code = await ws_closed_with(ws)
        assert messages[0]["type"] == "session.created"
        assert messages[-1]["error"]["code"] == "timeout" and code == 1011

    async def grpc_stream() -> None:
        async with grpc.aio.insecure_channel(grpc_address(door)) as channel:
            code, details = await stream_status(channel, [], [("x-goog-api-key", KEY)], half_close=False)
        assert code == grpc.StatusCode.OUT_OF_RANGE and "within" in details

    async def wyoming() -> None:
        started = time.monotonic()
        events = await wyoming_exchange(door, b"")
        assert (
            wyoming_codes(events) == ["timeout"] and START_S * 0.9 <= time.monotonic() - started < START_S + 5
        )

    async with meanwhile_served(door, baseline, own=1):  # Deepgram's opens at its handshake
        await asyncio.gather(
            ws(),
            engineio_handshake_only(),
            sio_connected_without_a_session(),
            tcp_silence(),
            stalled_body(),
            dg_live(),
            realtime(),
            grpc_stream(),
            wyoming(),
        )


# ------------------------------------------------------------------ a client that never reads


async def test_a_client_that_never_reads_is_dropped(door: ServerThread, baseline: int, watch: Watch) -> None:
    """WebSocket protocols: no pong within the heartbeat (0.5 s here) and the connection is cut
    with a reset (not a polite close the kernel would keep retrying into a full window);
    Wyoming: a write the client does not take within ``heartbeat_s`` and it is dropped. (The
    native WebSocket's and Socket.io's slow consumers: tests/transports/test_backpressure.py,
    test_auth_limits.py.)"""

    async def deaf_websocket(path: str, headers: dict[str, str], first: dict[str, Any] | None) -> None:
        ws = await RawWS.connect(door.port, path, headers=headers, rcvbuf=4096)
        if first is not None:
            await ws.send_json(first)
        ws.writer.transport.pause_reading()  # reads nothing, answers no ping (and sends nothing)
        await asyncio.sleep(5 * 0.5)  # five heartbeats
        ws.writer.transport.resume_reading()
        with pytest.raises(ConnectionResetError):  # the hub cut it with a reset meanwhile
            async with asyncio.timeout(10):
                while await ws.reader.read(65536):
                    pass
        ws.writer.close()

    async def wyoming() -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", wyoming_port(door))
        writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.transport.pause_reading()
        describe = line({"type": "describe"})
        with pytest.raises(ConnectionError):
            async with asyncio.timeout(20):
                while True:
                    writer.write(describe * 50)
                    await writer.drain()
                    await asyncio.sleep(0.01)
        writer.close()

    async with meanwhile_served(door, baseline, own=2):  # the deaf /v1/stream and Deepgram sessions
        await asyncio.gather(
            deaf_websocket(
                "/v1/listen?encoding=linear16&sample_rate=16000", {"Authorization": f"Token {KEY}"}, None
            ),
            deaf_websocket("/v1/realtime?intent=transcription", bearer(KEY), None),
            deaf_websocket(
                "/v1/stream", bearer(KEY), {"type": "session.start", "config": {"provider": "none"}}
            ),
            wyoming(),
        )


# ------------------------------------------------------------------ oversized messages


async def test_an_oversized_message_is_refused_before_it_is_kept(
    door: ServerThread, baseline: int, watch: Watch
) -> None:
    big = bytes(2 * FRAME + 1)

    async def ws() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(door.ws, headers=bearer(KEY)) as ws:
            await ws.send_json({"type": "session.start", "config": {"provider": "none"}})
            await ws.receive_json()
            await ws.send_str(json.dumps({"type": "ping", "id": "x" * 70_000}))  # a control message > 64 KiB
            assert (await ws.receive_json())["code"] == "too_large"
            await ws.send_bytes(big)
            _, code = await ws_closed_with(ws)
        assert code == 1009

    async def sio() -> None:
        client = await RawSocketIO.connect(door.port, {"token": KEY})
        await client.emit("session.start", {"config": {"provider": "none"}})
        await client.recv_event()
        await client.emit_binary("audio", bytes(FRAME + 1))  # over the frame limit: refused, goes on
        name, error = await client.recv_event()
        assert name == "error" and error["code"] == "too_large"
        await client.emit_binary("audio", big + bytes(4096))  # over Engine.IO's buffer: cut
        with pytest.raises(WSClosed):
            while True:
                await client.recv_event(10)
        client.ws.writer.close()

    async def sse() -> None:
        async with aiohttp.ClientSession(headers=bearer(KEY)) as http:
            async with http.post(f"{door.http}/v1/sessions", json={"config": {"provider": "none"}}) as r:
                sid = (await r.json())["session_id"]
            async with http.post(f"{door.http}/v1/sessions/{sid}/audio", data=bytes(FRAME + 1)) as r:
                assert r.status == 413 and (await r.json())["code"] == "too_large"
            async with http.delete(f"{door.http}/v1/sessions/{sid}") as r:
                assert r.status == 204

    async def uploads() -> None:
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData()
            form.add_field("file", bytes(UPLOAD + 1), filename="big.wav")
            async with http.post(f"{door.http}/v1/audio/transcriptions", data=form, headers=bearer(KEY)) as r:
                assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
            headers = {"Authorization": f"Token {KEY}"}
            async with http.post(f"{door.http}/v1/listen", data=bytes(UPLOAD + 1), headers=headers) as r:
                assert r.status == 413 and (await r.json())["err_code"] == "PAYLOAD_TOO_LARGE"

    async def dg_live() -> None:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(listen_url(door), headers={"Authorization": f"Token {KEY}"}) as ws:
                await ws.send_bytes(big)
                _, code = await ws_closed_with(ws)
        assert code == 1009

    async def realtime() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(realtime_url(door), headers=bearer(KEY)) as ws,
        ):
            await ws.receive_json()
            await ws.send_str(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (3 * FRAME)}))
            _, code = await ws_closed_with(ws)
        assert code == 1009

    async def grpc_calls() -> None:
        async with grpc.aio.insecure_channel(
            grpc_address(door), options=[("grpc.max_send_message_length", -1)]
        ) as channel:
            too_big = speech_v1.StreamingRecognizeRequest(audio_content=bytes(2 * FRAME + 8192))
            frame, details = await stream_status(
                channel, [first_request(), too_big], [("x-goog-api-key", KEY)]
            )
            request = speech_v1.RecognizeRequest(
                config=CONFIG, audio=speech_v1.RecognitionAudio(content=bytes(UPLOAD + (2 << 20)))
            )
            with pytest.raises(grpc.aio.AioRpcError) as upload_refused:
                await recognize(channel)(request, metadata=[("x-goog-api-key", KEY)])
        assert frame == grpc.StatusCode.INVALID_ARGUMENT and "exceeds the limit" in details, details
        assert upload_refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    async def wyoming() -> None:
        data = await wyoming_exchange(door, line({"type": "transcribe", "data_length": 70_000}) + bytes(10))
        payload = await wyoming_exchange(door, line({"type": "audio-chunk", "payload_length": FRAME + 1}))
        header = await wyoming_exchange(door, b'{"type": "' + b"x" * 70_000 + b'"}\n')
        assert wyoming_codes(data) == wyoming_codes(payload) == wyoming_codes(header) == ["too_large"]

    # own: the sessions whose frames are refused (WebSocket, Socket.io, SSE, Deepgram, gRPC)
    async with meanwhile_served(door, baseline, own=5):
        await asyncio.gather(ws(), sio(), sse(), uploads(), dg_live(), realtime(), grpc_calls(), wyoming())


# ------------------------------------------------------------------ malformed and deep JSON


async def test_malformed_and_deep_json_get_bad_message_never_a_traceback(
    door: ServerThread, baseline: int, watch: Watch
) -> None:
    async def ws() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(door.ws, headers=bearer(KEY)) as ws:
            for raw in ("{", DEEP, '{"type": "ping", "id": ' + DEEP + "}"):
                await ws.send_str(raw)
                error = await ws.receive_json()
                assert error["code"] == "bad_message" and not error["fatal"]
            await ws.send_json({"type": "ping", "id": 2})
            assert (await ws.receive_json())["type"] == "pong"  # the connection goes on

    async def sio() -> None:
        client = await RawSocketIO.connect(door.port, {"token": KEY})
        for raw in ('42["session.start", {', '42["session.start", ' + DEEP + "]"):
            await client.ws.send_text(raw)
            name, error = await client.recv_event()
            assert name == "error" and error["code"] == "bad_message"
        await client.ws.close()

    async def sse() -> None:
        async with aiohttp.ClientSession(headers=bearer(KEY)) as http:
            for body in (b"{", DEEP.encode()):
                async with http.post(f"{door.http}/v1/sessions", data=body) as r:
                    assert r.status == 400 and (await r.json())["code"] == "bad_message"

    async def dg() -> None:
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Token {KEY}", "Content-Type": "application/json"}
            async with http.post(f"{door.http}/v1/listen", data=DEEP, headers=headers) as r:
                assert r.status == 400 and (await r.json())["err_code"] == "Bad Request"
            async with http.ws_connect(listen_url(door), headers={"Authorization": f"Token {KEY}"}) as ws:
                for raw in ("{", DEEP):
                    await ws.send_str(raw)
                    assert (await ws.receive_json())["type"] == "Error"
                await ws.send_str('{"type": "CloseStream"}')
                messages, code = await ws_closed_with(ws)
        assert messages[-1]["type"] == "Metadata" and code == 1000  # the stream went on

    async def realtime() -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(realtime_url(door), headers=bearer(KEY)) as ws,
        ):
            await ws.receive_json()
            for raw in ("{", DEEP):
                await ws.send_str(raw)
                assert (await ws.receive_json())["error"]["code"] == "invalid_json"
            await ws.send_json(REALTIME_16K)
            assert (await ws.receive_json())["type"] == "session.updated"

    async def grpc_garbage() -> None:
        async with grpc.aio.insecure_channel(grpc_address(door)) as channel:
            raw = channel.unary_unary(f"{SPEECH_SERVICE}/Recognize")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await raw(b"\xff\xff\xff\xff not a protobuf", metadata=[("x-goog-api-key", KEY)])
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def wyoming() -> None:
        for raw in (
            b"{\n",
            DEEP.encode() + b"\n",
            b"[1, 2]\n",
            line({"type": "transcribe", "data_length": "12"}),
            line({"type": "transcribe", "data": {"a": 1}, "data_length": 5}) + DEEP[:5].encode(),
            line({"type": 7}),
        ):
            assert wyoming_codes(await wyoming_exchange(door, raw)) == ["bad_message"], raw[:40]
        # well framed, wrong fields: an error, and the connection goes on
        events = await wyoming_exchange(door, line({"type": "audio-start"}) + line({"type": "bogus-close"}))
        assert wyoming_codes(events)[0] == "bad_message"

    async with meanwhile_served(door, baseline, own=1):  # the Deepgram stream that goes on
        await asyncio.gather(ws(), sio(), sse(), dg(), realtime(), grpc_garbage(), wyoming())


# ------------------------------------------------------------------ a flood from one address


async def test_a_connection_flood_from_one_address_takes_only_that_addresss_share(
    door: ServerThread, baseline: int, watch: Watch
) -> None:
    """127.0.0.2 opens ``max_connections_per_address`` streaming sessions and keeps them alive;
    its next connection on any port is refused (HTTP 503, a Wyoming ``capacity`` error, an
    Engine.IO handshake 503), while keyed clients from 127.0.0.1 are served on every protocol.
    Then the total cap, on gRPC and HTTP alike."""
    held: list[RawWS] = []
    feeding = asyncio.Event()

    async def keep_alive(ws: RawWS) -> None:
        """Audio every 0.5 s, and the server's heartbeat pings answered (this module's heartbeat
        is 0.5 s: on a loaded machine a late frame meant an unanswered ping, the hub closed the
        flooder's connection, and its next probe was admitted instead of refused)."""

        async def answer_pings() -> None:
            with contextlib.suppress(WSClosed):
                while True:
                    await ws.recv()

        reader = asyncio.create_task(answer_pings())
        try:
            while not feeding.is_set():
                await ws.send_bytes(bytes(1600))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(feeding.wait(), 0.5)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    for _ in range(PER_ADDRESS):
        ws = await RawWS.connect(door.port, headers=bearer(KEY), source=FLOODER)
        await ws.send_json({"type": "session.start", "config": {"provider": "none"}})
        assert (await ws.recv_json())["type"] == "session.started"
        held.append(ws)
    feeders = [asyncio.create_task(keep_alive(ws)) for ws in held]
    try:
        assert door.call(lambda: door.app[DOOR].gate.at(FLOODER)) == PER_ADDRESS
        async with meanwhile_served(door, baseline, settle=False):  # the flood is still there
            received, _ = await raw_http(
                door.port,
                f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{door.port}\r\n\r\n".encode(),
                source=FLOODER,
            )
            assert received.startswith(b"HTTP/1.1 503") and b'"capacity"' in received
            received, _ = await raw_http(
                door.port,
                get("/socket.io/?EIO=4&transport=polling", door.port),
                source=FLOODER,
            )
            assert received.startswith(b"HTTP/1.1 503")
            events = await wyoming_exchange(door, line({"type": "describe"}), source=FLOODER)
            assert wyoming_codes(events) == ["capacity"]
            with pytest.raises(
                (aiohttp.WSServerHandshakeError, aiohttp.ServerDisconnectedError, ConnectionError)
            ):
                await RawWS.connect(door.port, headers=bearer(KEY), source=FLOODER)
    finally:
        feeding.set()
        await asyncio.gather(*feeders, return_exceptions=True)
        for ws in held:
            await ws.close()
    await nothing_left(door, baseline)

    # The total cap: one more call or connection than the gate holds is refused, on gRPC too.
    async with aiohttp.ClientSession() as http, http.ws_connect(door.ws, headers=bearer(KEY)) as holder:
        door.call(lambda: setattr(door.app[DOOR].gate, "total", len(door.app[DOOR].gate)))
        try:
            async with grpc.aio.insecure_channel(grpc_address(door)) as channel:
                code, _ = await stream_status(channel, [], [("x-goog-api-key", KEY)], half_close=False)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            received, _ = await raw_http(
                door.port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{door.port}\r\n\r\n".encode()
            )
            assert received.startswith(b"HTTP/1.1 503")
        finally:
            door.call(lambda: setattr(door.app[DOOR].gate, "total", door.settings.server.max_connections))
        await holder.send_json({"type": "ping", "id": 1})
        assert (await holder.receive_json())["type"] == "pong"
    await nothing_left(door, baseline)


# ------------------------------------------------------------------ the Host (DNS rebinding)


async def test_a_host_the_hub_does_not_answer_to_is_refused_on_every_route(
    door: ServerThread, watch: Watch
) -> None:
    """Bound to loopback, the hub answers only to loopback names: a page on a rebinding name
    (``Host: evil.example``) gets 403 on every route, the UI and Socket.io included."""
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/healthz", "/metrics", "/v1/models", "/socket.io/?EIO=4&transport=polling"):
            for host, status in (("evil.example:8080", 403), ("localhost:8080", None), ("[::1]", None)):
                headers = {"Host": host, **bearer(KEY), "Origin": f"http://{host}"}
                async with http.get(door.http + path, headers=headers) as r:
                    if status is None:
                        assert r.status == 200, (path, host)
                    else:
                        assert r.status == status, (path, host)
                        body = await r.json()
                        assert "evil.example" in json.dumps(body)
