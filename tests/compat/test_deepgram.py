"""Deepgram-compatible /v1/listen, driven by the official ``deepgram-sdk`` (7.x) pointed at a
real hub (faster-whisper tiny.en) on 127.0.0.1, on the spoken fixtures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import av
import httpx
import numpy as np
import pytest
from aiohttp import web
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment

from tests.audio_utils import encode, fixture, fixture_entry, load_wav, pcm16_bytes, resample, wer
from tests.transports.conftest import KEY, ServerThread, make_settings

# deepgram-sdk 7 imports websockets' legacy client (its fallback for websockets < 14)
pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets.legacy"),
]

CHUNK = 3200  # 100 ms of 16 kHz PCM16
WAIT = 120.0


def client_for(
    server: ServerThread, key: str = KEY, http: httpx.AsyncClient | None = None
) -> AsyncDeepgramClient:
    """The SDK with its base URLs pointed at the hub (the one change an app makes)."""
    env = DeepgramClientEnvironment(
        base=server.http, production=f"ws://127.0.0.1:{server.port}", agent="", agent_rest=""
    )
    return AsyncDeepgramClient(api_key=key, environment=env, httpx_client=http)


def pcm(name: str) -> bytes:
    samples, _rate = load_wav(fixture(name))
    return pcm16_bytes(samples)


def mulaw(name: str) -> bytes:
    samples, rate = load_wav(fixture(name))
    x = np.round(np.clip(resample(samples, rate, 8000), -1, 1) * 32767).astype(np.int16)
    ctx = av.CodecContext.create("pcm_mulaw", "w")
    ctx.sample_rate, ctx.layout, ctx.format = 8000, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


class Messages:
    """Everything the hub sends on one live connection, with event-driven waits."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    async def read(self, conn: Any) -> None:
        async for message in conn:
            self.items.append(message)
            self._changed.set()

    async def wait_for(self, predicate: Any) -> Any:
        async def loop() -> Any:
            while True:
                for m in self.items:
                    if predicate(m):
                        return m
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(loop(), WAIT)

    def of(self, kind: str) -> list[Any]:
        return [m for m in self.items if getattr(m, "type", None) == kind]


async def stream(conn: Any, data: bytes, chunk: int = CHUNK) -> None:
    for i in range(0, len(data), chunk):
        await conn.send_media(data[i : i + chunk])


async def test_live_sdk_results_events_and_metadata(whisper_server: ServerThread) -> None:
    entry = fixture_entry("silences.wav")
    async with client_for(whisper_server).listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate="16000",
        vad_events="true",
        utterance_end_ms="1000",
        punctuate="true",
        smart_format="true",
        keyterm="Chicago",
    ) as conn:
        got = Messages()
        reader = asyncio.create_task(got.read(conn))
        await stream(conn, pcm("silences.wav"))
        await conn.send_close_stream()
        await asyncio.wait_for(reader, WAIT)
    finals = [r for r in got.of("Results") if r.is_final]
    assert len(finals) >= 3  # the file's utterances, each its own final
    text = " ".join(r.channel.alternatives[0].transcript for r in finals)
    assert wer(entry["text"], text) <= 0.15, text
    for r in finals:
        alt = r.channel.alternatives[0]
        assert r.channel_index == [0, 1] and r.duration > 0 and 0 <= r.start <= entry["duration"]
        span = (r.start - 0.5, r.start + r.duration + 0.5)
        assert alt.words and all(span[0] <= w.start <= w.end <= span[1] for w in alt.words)
        assert all(0.0 <= w.confidence <= 1.0 and w.punctuated_word for w in alt.words)
        assert 0.0 < alt.confidence <= 1.0
    assert [r.start for r in finals] == sorted(r.start for r in finals)
    assert any(r.speech_final for r in finals)
    assert len({r.metadata.request_id for r in finals}) == 1
    started = got.of("SpeechStarted")
    assert len(started) >= len(finals) and started[0].timestamp < finals[0].start + 0.5
    assert got.of("UtteranceEnd")  # after the utterances the VAD closed
    (metadata,) = got.of("Metadata")
    assert got.items[-1] is metadata and metadata.request_id == finals[0].metadata.request_id
    assert abs(metadata.duration - entry["duration"]) < 0.05 and metadata.channels == 1
    assert whisper_server.open_sessions() == 0


async def test_live_finalize_flushes_and_the_stream_goes_on(whisper_server: ServerThread) -> None:
    first, second = fixture_entry("quick_fox.wav"), fixture_entry("weather_question.wav")
    async with client_for(whisper_server).listen.v1.connect(
        model="whisper:tiny.en", encoding="linear16", sample_rate="16000", interim_results="true"
    ) as conn:
        got = Messages()
        reader = asyncio.create_task(got.read(conn))
        await stream(conn, pcm("address_time.wav")[: 16000 * 2 * 3])  # 3 s into a 5 s utterance
        interim = await got.wait_for(lambda m: getattr(m, "is_final", None) is False)
        assert interim.channel.alternatives[0].transcript
        await stream(conn, pcm("address_time.wav")[16000 * 2 * 3 :])
        await stream(conn, pcm("quick_fox.wav"))
        await conn.send_finalize()
        lead = fixture_entry("address_time.wav")["duration"]
        flushed = await got.wait_for(lambda m: getattr(m, "from_finalize", False) and m.start >= lead - 0.1)
        assert wer(first["text"], flushed.channel.alternatives[0].transcript) <= 0.15
        await stream(conn, pcm("weather_question.wav"))
        await conn.send_close_stream()
        await asyncio.wait_for(reader, WAIT)
    finals = [r for r in got.of("Results") if r.is_final]
    assert wer(second["text"], finals[-1].channel.alternatives[0].transcript) <= 0.15
    before = lead + first["duration"]
    assert before - 0.1 <= finals[-1].start <= before + second["duration"]  # stream time went on
    assert abs(got.of("Metadata")[0].duration - (before + second["duration"])) < 0.05


@pytest.mark.parametrize("encoding", ["mulaw", "opus"])
async def test_live_other_encodings(whisper_server: ServerThread, encoding: str) -> None:
    entry = fixture_entry("reminder.wav")
    if encoding == "mulaw":
        data, options = mulaw("reminder.wav"), {"encoding": "mulaw", "sample_rate": "8000"}
    else:
        samples, rate = load_wav(fixture("reminder.wav"))
        data, options = encode(samples, rate, "opus"), {"encoding": "opus"}
    async with client_for(whisper_server).listen.v1.connect(model="nova-2", **options) as conn:
        got = Messages()
        reader = asyncio.create_task(got.read(conn))
        await stream(conn, data, 4000)
        await conn.send_close_stream()
        await asyncio.wait_for(reader, WAIT)
    text = " ".join(r.channel.alternatives[0].transcript for r in got.of("Results") if r.is_final)
    assert wer(entry["text"], text) <= 0.2, text


async def test_live_refusals_in_deepgram_shape(whisper_server: ServerThread) -> None:
    with pytest.raises(ApiError) as info:
        async with client_for(whisper_server).listen.v1.connect(model="no-such-model"):
            pass
    assert info.value.status_code == 400
    with pytest.raises(ApiError) as info:
        async with client_for(whisper_server, key="wrong").listen.v1.connect(model="nova-3"):
            pass
    assert info.value.status_code == 401
    url = f"ws://127.0.0.1:{whisper_server.port}/v1/listen"
    async with aiohttp.ClientSession() as http:
        async with http.get(
            url, params={"encoding": "g729"}, headers={"Authorization": f"Token {KEY}"}
        ) as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["err_code"] == "Bad Request" and "g729" in body["err_msg"] and body["request_id"]


async def test_live_browser_subprotocol_auth_and_bad_messages(whisper_server: ServerThread) -> None:
    url = f"ws://127.0.0.1:{whisper_server.port}/v1/listen?encoding=linear16&sample_rate=16000"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, protocols=("token", KEY)) as ws:
            assert ws.protocol == "token"
            await ws.send_str("not json")
            error = json.loads((await ws.receive(timeout=WAIT)).data)
            assert error["type"] == "Error" and error["variant"] == "SchemaError"
            await ws.send_str(json.dumps({"type": "KeepAlive"}))
            await ws.send_str(json.dumps({"type": "Configure", "keyterms": ["Baker Street"]}))
            ok = json.loads((await ws.receive(timeout=WAIT)).data)
            assert ok["type"] == "ConfigureSuccess" and ok["keyterms"] == ["Baker Street"]
            await ws.send_str(json.dumps({"type": "Configure", "keyterms": ["x" * 10_000]}))
            failure = json.loads((await ws.receive(timeout=WAIT)).data)
            assert failure["type"] == "ConfigureFailure" and failure["description"]
            await ws.send_bytes(pcm("quick_fox.wav"))
            await ws.send_str(json.dumps({"type": "CloseStream"}))
            messages = [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]
            assert ws.close_code == 1000
    assert [m["type"] for m in messages][-1] == "Metadata"
    finals = [m for m in messages if m["type"] == "Results" and m["is_final"]]
    assert (
        wer(fixture_entry("quick_fox.wav")["text"], finals[0]["channel"]["alternatives"][0]["transcript"])
        <= 0.15
    )


async def test_prerecorded_sdk_words_and_utterances(whisper_server: ServerThread) -> None:
    entry = fixture_entry("silences.wav")
    async with httpx.AsyncClient(timeout=WAIT) as http:
        await _prerecorded(client_for(whisper_server, http=http), entry)


async def _prerecorded(client: AsyncDeepgramClient, entry: dict[str, Any]) -> None:
    result = await client.listen.v1.media.transcribe_file(
        request=fixture("silences.wav").read_bytes(), model="nova-3", utterances=True, smart_format=True
    )
    alt = result.results.channels[0].alternatives[0]
    assert wer(entry["text"], alt.transcript) <= 0.15, alt.transcript
    assert alt.words and all(w.start <= w.end for w in alt.words) and 0 < alt.confidence <= 1
    assert result.results.utterances and len(result.results.utterances) >= 3
    utt = result.results.utterances[0]
    assert utt.words and utt.start <= utt.words[0].start and utt.transcript
    assert abs(result.metadata.duration - entry["duration"]) < 0.05 and result.metadata.request_id
    # raw PCM with encoding/sample_rate, no container
    raw = await client.listen.v1.media.transcribe_file(
        request=pcm("quick_fox.wav"), model="nova-3", encoding="linear16"
    )
    assert (
        wer(fixture_entry("quick_fox.wav")["text"], raw.results.channels[0].alternatives[0].transcript)
        <= 0.15
    )


async def test_prerecorded_refusals_in_deepgram_shape(whisper_server: ServerThread) -> None:
    async def post(**kw: Any) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{whisper_server.http}/v1/listen", **kw) as resp:
                return resp.status, await resp.json()

    auth = {"Authorization": f"Token {KEY}"}
    status, body = await post(json={"url": "http://127.0.0.1:1/a.wav"}, headers=auth)
    assert status == 400 and body["err_code"] == "Bad Request" and "fetch_urls" in body["err_msg"]
    status, body = await post(data=b"garbage, not audio", headers=auth)
    assert status == 400 and body["asrhub_code"] == "bad_audio"
    status, body = await post(data=pcm("quick_fox.wav"), headers={"Authorization": "Token wrong"})
    assert status == 401 and body["err_code"] == "INVALID_AUTH"
    status, body = await post(data=pcm("quick_fox.wav"), params={"model": "nope"}, headers=auth)
    assert status == 400 and body["asrhub_code"] == "unknown_provider"


async def test_prerecorded_url_fetched_only_when_allowed() -> None:
    """``{"url": …}`` with ``server.fetch_urls`` on: the audio comes from a real HTTP server."""

    async def serve_file(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(fixture("quick_fox.wav"))

    files = web.Application()
    files.router.add_get("/quick_fox.wav", serve_file)
    runner = web.AppRunner(files)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with ServerThread(make_settings(server={"fetch_urls": True})) as hub:
            async with httpx.AsyncClient(timeout=WAIT) as http:
                client = client_for(hub, http=http)
                result = await client.listen.v1.media.transcribe_url(
                    url=f"http://127.0.0.1:{port}/quick_fox.wav"
                )
                with pytest.raises(ApiError) as info:
                    await client.listen.v1.media.transcribe_url(url=f"http://127.0.0.1:{port}/missing.wav")
    finally:
        await runner.cleanup()
    text = result.results.channels[0].alternatives[0].transcript
    assert wer(fixture_entry("quick_fox.wav")["text"], text) <= 0.15, text
    assert info.value.status_code == 400 and "404" in info.value.body["err_msg"]  # type: ignore[index]


def speech_then_silence(name: str, silence_s: float) -> tuple[bytes, float]:
    """The fixture's speech (its quiet tail cut) then room tone; where the speech ends (s)."""
    from tests.audio_utils import room_noise

    x, _ = load_wav(fixture(name))
    seg = fixture_entry(name)["segments"][0]
    speech = x[: int(seg["end"] * 16000)]
    audio = np.concatenate([speech, room_noise(silence_s, seed=5)])
    return pcm16_bytes(audio), seg["end"]


async def test_live_endpointing_and_utterance_end_on_its_own_timer(whisper_server: ServerThread) -> None:
    """``endpointing=300`` ends the utterance after 300 ms of silence; ``UtteranceEnd`` comes
    once the audio has gone ``utterance_end_ms`` past the last word — and not when the stream
    stops sooner (the hosted API's timer, not the VAD's end)."""
    entry = fixture_entry("quick_fox.wav")
    for silence_s, expect_end in ((2.0, True), (0.6, False)):
        data, speech_end = speech_then_silence("quick_fox.wav", silence_s)
        async with client_for(whisper_server).listen.v1.connect(
            model="nova-3",
            encoding="linear16",
            sample_rate="16000",
            interim_results="true",
            endpointing="300",
            utterance_end_ms="1000",
        ) as conn:
            got = Messages()
            reader = asyncio.create_task(got.read(conn))
            await stream(conn, data)
            if expect_end:
                await got.wait_for(lambda m: getattr(m, "type", None) == "UtteranceEnd")
            await conn.send_close_stream()
            await asyncio.wait_for(reader, WAIT)
        finals = [r for r in got.of("Results") if r.is_final and r.channel.alternatives[0].transcript]
        assert len(finals) == 1 and finals[0].speech_final, finals
        assert wer(entry["text"], finals[0].channel.alternatives[0].transcript) <= 0.15
        ends = got.of("UtteranceEnd")
        if not expect_end:
            assert not ends  # 0.6 s of silence after the last word: no 1000 ms gap yet
            continue
        (end,) = ends
        last_word = finals[0].channel.alternatives[0].words[-1].end
        assert abs(end.last_word_end - last_word) < 0.01 and last_word <= speech_end + 0.3
        assert got.items.index(end) > got.items.index(finals[0])


async def test_live_bad_endpointing_values_are_400(whisper_server: ServerThread) -> None:
    url = f"ws://127.0.0.1:{whisper_server.port}/v1/listen"
    async with aiohttp.ClientSession() as http:
        for params in ({"endpointing": "soon"}, {"utterance_end_ms": "-5"}, {"utterance_end_ms": "x"}):
            async with http.get(url, params=params, headers={"Authorization": f"Token {KEY}"}) as resp:
                assert resp.status == 400, params
                body = await resp.json()
                name = next(iter(params))
                assert body["err_code"] == "Bad Request" and name in body["err_msg"], body
