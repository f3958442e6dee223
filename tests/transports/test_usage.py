"""Usage metering and quotas per API key (issue 27 item 4), on one real hub (faster-whisper
tiny.en) with four keys, driven by real clients: aiohttp (WebSocket, HTTP), the official
``openai``, ``deepgram-sdk`` and ``google-cloud-speech`` clients.

* what one key does — a live WebSocket session of real speech, an HTTP upload, a gRPC
  ``Recognize`` — is counted against that key only (audio seconds to the sample, sessions,
  requests), in ``GET /v1/usage`` and in the per-key Prometheus series;
* a session that reaches its key's daily quota stops taking audio at the quota, delivers the
  final of the utterance it was in, then ``quota_exceeded`` and ``session.closed``;
* a key past its quota is refused in every protocol's own shape; other keys are not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import grpc
import httpx
import openai
import pytest
from google.api_core import exceptions as gexc
from google.cloud import speech_v1
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcTransport

from asrhub.config import KeyLimits
from asrhub.door.keys import fingerprint
from asrhub.transports.door import DOOR
from asrhub.transports.grpc_server import GrpcServer
from tests.audio_utils import fixture, fixture_entry, wer
from tests.compat.test_deepgram import client_for
from tests.transports.conftest import KEY, OTHER_KEY, ServerThread, frames, make_settings, speech
from tests.transports.test_grpc_speech import Metadata

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets.legacy"),
]

QUOTA_KEY = "test-key-quota"
SPENT_KEY = "test-key-spent"
QUOTA_S = 9.0
"""Inside the second utterance of silences.wav (7.22 s to 10.02 s)."""
SPENT_S = 1.0
UPLOAD_KEY = "test-key-upload"
WAIT = 120.0


class Hub:
    def __init__(self, thread: ServerThread, grpc_server: GrpcServer) -> None:
        self.thread = thread
        self.grpc = grpc_server
        self.address = f"127.0.0.1:{grpc_server.port}"

    def speech_client(self, key: str) -> speech_v1.SpeechClient:
        channel = grpc.intercept_channel(
            grpc.insecure_channel(self.address), Metadata([("x-goog-api-key", key)])
        )
        return speech_v1.SpeechClient(transport=SpeechGrpcTransport(channel=channel))


@pytest.fixture(scope="module")
def hub() -> Iterator[Hub]:
    settings = make_settings(
        keys=(KEY, OTHER_KEY, QUOTA_KEY, SPENT_KEY, UPLOAD_KEY),
        limits={
            "per_key": {
                fingerprint(QUOTA_KEY): KeyLimits(audio_seconds_per_day=QUOTA_S),
                fingerprint(SPENT_KEY): KeyLimits(audio_seconds_per_day=SPENT_S, max_sessions=2),
                fingerprint(UPLOAD_KEY): KeyLimits(audio_seconds_per_day=5.0, max_sessions=1),
            }
        },
    )
    with ServerThread(settings) as thread:

        async def start() -> GrpcServer:
            server = GrpcServer(thread.hub, thread.app[DOOR], thread.settings)
            await server.start("127.0.0.1", 0)
            return server

        server = asyncio.run_coroutine_threadsafe(start(), thread.loop).result(timeout=30)
        yield Hub(thread, server)
        asyncio.run_coroutine_threadsafe(server.stop(1.0), thread.loop).result(timeout=30)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def usage_of(hub: Hub, key: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{hub.thread.http}/v1/usage", headers=auth(key), params=params) as resp,
    ):
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


async def stream_session(
    hub: Hub, key: str, pcm: bytes, config: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], int | None]:
    """One WebSocket session: ``pcm`` in 100 ms frames (each awaited: the hub's backpressure),
    then ``session.end``; returns every event up to the close and the close code. A session that
    ends on its own (its quota) closes while frames are still being sent: the client reads as it
    sends (a frame never goes out before the reader had its turn) and stops sending once the
    session closed, as a real client does — else the hub's close of a socket holding unread
    frames is a TCP reset, which discards what the client had not read yet."""
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(hub.thread.ws, headers=auth(key)) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": config or {}}))

        async def read() -> int | None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    events.append(json.loads(msg.data))
            return ws.close_code

        def over() -> bool:
            return ws.closed or any(e["type"] == "session.closed" or e.get("fatal") for e in events)

        reader = asyncio.create_task(read())
        try:
            for frame in frames(pcm):
                await asyncio.sleep(0)  # the reader's turn
                if over():
                    break
                await ws.send_bytes(frame)
            if not over():
                await ws.send_str(json.dumps({"type": "session.end"}))
        except ConnectionResetError:
            pass  # closed by the hub mid-send
        code = await asyncio.wait_for(reader, WAIT)
    return events, code


async def transcribe_http(hub: Hub, key: str, name: str) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("file", fixture(name).read_bytes(), filename=name, content_type="audio/wav")
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{hub.thread.http}/v1/transcribe", data=form, headers=auth(key)) as resp,
    ):
        return resp.status, await resp.json()


def recognize(hub: Hub, key: str, pcm: bytes) -> speech_v1.RecognizeResponse:
    config = speech_v1.RecognitionConfig(
        encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
        sample_rate_hertz=16_000,
        language_code="en-US",
    )
    return hub.speech_client(key).recognize(config=config, audio=speech_v1.RecognitionAudio(content=pcm))


def seconds(pcm: bytes) -> float:
    return len(pcm) / 32_000


# ------------------------------------------------------------------ counting


async def test_each_protocol_counts_against_its_own_key_only(hub: Hub) -> None:
    before, other_before = await usage_of(hub, KEY), await usage_of(hub, OTHER_KEY)
    fox, fox_text = speech("quick_fox.wav")
    events, code = await stream_session(hub, KEY, fox)
    assert code == 1000 and events[-1] == {"type": "session.closed", "reason": "end"}
    assert wer(fox_text, " ".join(e["text"] for e in events if e["type"] == "transcript.final")) < 0.3
    status, body = await transcribe_http(hub, KEY, "weather_question.wav")
    assert status == 200 and body["text"]
    reminder, reminder_text = speech("reminder.wav")
    response = await asyncio.to_thread(recognize, hub, KEY, reminder)
    assert wer(reminder_text, response.results[0].alternatives[0].transcript) < 0.3

    after = await usage_of(hub, KEY)
    fed = seconds(fox) + fixture_entry("weather_question.wav")["duration"] + seconds(reminder)
    assert after["audio_seconds"] == pytest.approx(before["audio_seconds"] + fed, abs=0.01)
    assert after["sessions"] == before["sessions"] + 2  # the WebSocket's; Recognize runs one too
    assert after["requests"] == before["requests"] + 3  # its handshake, the upload, the gRPC call
    assert after["total"]["audio_seconds"] >= after["audio_seconds"] > 0
    assert after["key_id"] == fingerprint(KEY) and after["scope"] == "node"
    assert after["period"]["end"] > after["period"]["start"]
    assert after["quota"]["audio_seconds_per_day"] is None  # unlimited by default
    assert after["quota"]["max_sessions"] == hub.thread.settings.limits.max_sessions_per_key
    assert await usage_of(hub, OTHER_KEY) == other_before  # nothing of KEY's reaches another key

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{hub.thread.http}/metrics", headers=auth(KEY)) as resp,
    ):
        text = await resp.text()
    series = f'asrhub_key_audio_seconds_total{{key="{fingerprint(KEY)}"}}'
    line = next(row for row in text.splitlines() if row.startswith(series))
    assert float(line.split()[-1]) == pytest.approx(after["total"]["audio_seconds"], abs=0.01)
    assert f'asrhub_key_sessions_total{{key="{fingerprint(KEY)}"}}' in text
    assert f'asrhub_key_requests_total{{key="{fingerprint(KEY)}"}}' in text
    assert KEY not in text and OTHER_KEY not in text  # key ids, never keys


async def test_usage_shows_the_callers_own_key_and_needs_one(hub: Hub) -> None:
    asked = {"key_id": fingerprint(KEY), "key": KEY, "token": KEY}
    mine = await usage_of(hub, OTHER_KEY, asked)  # the key that calls decides, not parameters
    assert mine["key_id"] == fingerprint(OTHER_KEY)
    again = await usage_of(hub, OTHER_KEY)
    assert again["requests"] == mine["requests"]  # reading usage is not a request
    async with aiohttp.ClientSession() as http, http.get(f"{hub.thread.http}/v1/usage") as resp:
        assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"


# ------------------------------------------------------------------ a quota crossed mid-session


async def test_a_session_that_reaches_its_quota_delivers_its_last_final_then_ends(hub: Hub) -> None:
    pcm, _ = speech("silences.wav")
    segments = fixture_entry("silences.wav")["segments"]
    events, code = await stream_session(hub, QUOTA_KEY, pcm)
    kinds = [e["type"] for e in events]
    assert kinds[-2:] == ["error", "session.closed"], events
    assert [e for e in events if e["type"] == "error"] == [events[-2]], events
    error, closed = events[-2:]
    assert error["code"] == "quota_exceeded" and error["fatal"] is True and "quota" in error["message"]
    assert closed["reason"] == "quota_exceeded" and code == 4429
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert len(finals) == 2, finals  # the first utterance, and the one the quota cut
    assert wer(segments[0]["text"], finals[0]["text"]) < 0.3
    last = finals[1]
    assert kinds.index("error") > kinds.index("transcript.final", kinds.index("transcript.final") + 1)
    assert segments[1]["start"] - 0.5 <= last["start"] and last["end"] <= QUOTA_S + 0.01
    said, cut = last["text"].lower().split(), segments[1]["text"].lower().split()
    assert 0 < len(said) < len(cut) + 1  # a prefix of the utterance was heard, no more
    usage = await usage_of(hub, QUOTA_KEY)
    assert usage["audio_seconds"] == pytest.approx(QUOTA_S, abs=0.001)  # not a sample past it
    assert usage["quota"] == {
        "audio_seconds_per_day": QUOTA_S,
        "audio_seconds_remaining": 0.0,
        "max_sessions": hub.thread.settings.limits.max_sessions_per_key,
    }
    assert await hub.thread.no_sessions()


# ------------------------------------------------------------------ refusals past the quota


@pytest.fixture(scope="module")
def spent(hub: Hub) -> str:
    """SPENT_KEY after a session that used its whole quota."""
    pcm, _ = speech("quick_fox.wav")
    events, code = asyncio.run(stream_session(hub, SPENT_KEY, pcm, {"provider": "none"}))
    assert len(events) >= 2 and events[-2].get("code") == "quota_exceeded", (code, events)
    return SPENT_KEY


async def test_a_key_past_its_quota_is_refused_on_the_websocket(hub: Hub, spent: str) -> None:
    events, code = await stream_session(hub, spent, bytes(3200))
    assert events == [events[0]] and events[0]["code"] == "quota_exceeded" and events[0]["fatal"]
    assert code == 4429
    events, code = await stream_session(hub, KEY, bytes(3200), {"provider": "none"})
    assert code == 1000 and events[0]["type"] == "session.started"  # another key is not affected


async def test_a_key_past_its_quota_is_refused_on_socketio_and_deepgram_live(hub: Hub, spent: str) -> None:
    import socketio
    from deepgram.core.api_error import ApiError

    client = socketio.AsyncClient(reconnection=False)
    error: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    gone = asyncio.Event()
    client.on("error", lambda data: error.done() or error.set_result(data))
    client.on("disconnect", lambda *_: gone.set())
    await client.connect(hub.thread.http, auth={"token": spent}, transports=["websocket"])
    await client.emit("session.start", {"type": "session.start", "config": {"provider": "none"}})
    refused = await asyncio.wait_for(error, WAIT)
    assert refused["code"] == "quota_exceeded" and refused["fatal"] is True
    await asyncio.wait_for(gone.wait(), WAIT)  # the error first, then the disconnect
    await client.disconnect()

    with pytest.raises(ApiError) as info:  # Deepgram live: its session opens at the handshake
        async with client_for(hub.thread, key=spent).listen.v1.connect(model="nova-3"):
            pass
    assert info.value.status_code == 429


async def test_a_key_past_its_quota_is_refused_over_http_in_each_shape(hub: Hub, spent: str) -> None:
    status, body = await transcribe_http(hub, spent, "quick_fox.wav")
    assert status == 429 and body["type"] == "error" and body["code"] == "quota_exceeded"
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{hub.thread.http}/v1/sessions", json={"config": {}}, headers=auth(spent)) as resp,
    ):
        assert resp.status == 429 and (await resp.json())["code"] == "quota_exceeded"

    client = openai.AsyncOpenAI(base_url=f"{hub.thread.http}/v1", api_key=spent, max_retries=0)
    with pytest.raises(openai.RateLimitError) as refused:
        await client.audio.transcriptions.create(model="whisper-1", file=fixture("quick_fox.wav"))
    await client.close()
    assert refused.value.status_code == 429 and refused.value.code == "quota_exceeded"

    from deepgram.core.api_error import ApiError

    async with httpx.AsyncClient() as http:
        with pytest.raises(ApiError) as info:
            await client_for(hub.thread, key=spent, http=http).listen.v1.media.transcribe_file(
                request=fixture("quick_fox.wav").read_bytes(), model="nova-3"
            )
    assert info.value.status_code == 429
    assert isinstance(info.value.body, dict) and info.value.body["err_code"] == "TOO_MANY_REQUESTS"
    assert info.value.body["asrhub_code"] == "quota_exceeded"

    usage = await usage_of(hub, spent)  # reading usage is never refused
    assert usage["audio_seconds"] == pytest.approx(SPENT_S, abs=0.001)
    assert usage["quota"]["audio_seconds_remaining"] == 0.0 and usage["quota"]["max_sessions"] == 2


async def test_a_key_past_its_quota_is_refused_over_grpc(hub: Hub, spent: str) -> None:
    pcm, _ = speech("quick_fox.wav")
    with pytest.raises(gexc.ResourceExhausted) as refused:
        await asyncio.to_thread(recognize, hub, spent, pcm)
    assert "quota" in refused.value.message

    def stream() -> None:
        config = speech_v1.StreamingRecognitionConfig(
            config=speech_v1.RecognitionConfig(
                encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
                sample_rate_hertz=16_000,
                language_code="en-US",
            )
        )
        requests = (speech_v1.StreamingRecognizeRequest(audio_content=f) for f in frames(pcm))
        list(hub.speech_client(spent).streaming_recognize(config, requests))

    with pytest.raises(gexc.ResourceExhausted):
        await asyncio.to_thread(stream)


async def test_an_upload_that_would_pass_the_quota_is_refused_whole(hub: Hub) -> None:
    status, body = await transcribe_http(hub, UPLOAD_KEY, "address_time.wav")  # 5.16 s > 5 s
    assert status == 429 and body["code"] == "quota_exceeded" and "would pass" in body["message"]
    assert (await usage_of(hub, UPLOAD_KEY))["audio_seconds"] == 0.0  # refused: nothing counted
    status, body = await transcribe_http(hub, UPLOAD_KEY, "quick_fox.wav")  # 3.35 s fits
    assert status == 200 and body["text"]
    usage = await usage_of(hub, UPLOAD_KEY)
    assert usage["audio_seconds"] == pytest.approx(fixture_entry("quick_fox.wav")["duration"], abs=0.01)
    assert usage["quota"]["audio_seconds_remaining"] == pytest.approx(5.0 - usage["audio_seconds"])


async def test_a_keys_own_session_cap_replaces_the_default(hub: Hub) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(hub.thread.ws, headers=auth(UPLOAD_KEY)) as first:
            await first.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            assert (await first.receive_json())["type"] == "session.started"
            events, _code = await stream_session(hub, UPLOAD_KEY, bytes(3200), {"provider": "none"})
            assert events[0]["code"] == "capacity" and "limit of 1 sessions" in events[0]["message"]
    assert await hub.thread.no_sessions()
