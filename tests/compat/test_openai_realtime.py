"""OpenAI Realtime transcription sessions on /v1/realtime, driven by the official ``openai``
SDK's realtime clients (GA and beta) against a real hub (faster-whisper tiny.en)."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes, resample, wer
from tests.transports.conftest import KEY, ServerThread

from .test_deepgram import mulaw

WAIT = 120.0
GA_SESSION = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500},
            "noise_reduction": {"type": "near_field"},
        }
    },
}


@pytest.fixture
async def sdk(whisper_server: ServerThread) -> AsyncIterator[openai.AsyncOpenAI]:
    # websocket_base_url: the beta client would otherwise switch to wss:// (the GA one maps http → ws)
    client = openai.AsyncOpenAI(
        base_url=f"{whisper_server.http}/v1",
        websocket_base_url=f"ws://127.0.0.1:{whisper_server.port}/v1",
        api_key=KEY,
        max_retries=0,
    )
    yield client
    await client.close()


def pcm24(name: str) -> bytes:
    samples, rate = load_wav(fixture(name))
    return pcm16_bytes(resample(samples, rate, 24000))


async def append(conn: Any, data: bytes, chunk: int = 9600) -> None:
    for i in range(0, len(data), chunk):
        await conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + chunk]).decode())


async def read_until(conn: Any, done: Any) -> list[Any]:
    """Events until ``done(events)`` holds (event-driven; bounded by WAIT)."""
    events: list[Any] = []

    async def loop() -> list[Any]:
        async for event in conn:
            events.append(event)
            if done(events):
                return events
        return events

    return await asyncio.wait_for(loop(), WAIT)


def completed(events: list[Any]) -> list[Any]:
    return [e for e in events if e.type == "conversation.item.input_audio_transcription.completed"]


async def test_server_vad_items_deltas_and_completed(
    sdk: openai.AsyncOpenAI, whisper_server: ServerThread
) -> None:
    entry = fixture_entry("silences.wav")
    async with sdk.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await conn.recv()
        assert created.type == "session.created" and created.session.type == "transcription"
        await conn.session.update(session=GA_SESSION)  # type: ignore[arg-type]
        updated = await conn.recv()
        assert updated.type == "session.updated"
        assert updated.session.audio.input.turn_detection.silence_duration_ms == 500  # type: ignore[union-attr]
        await append(conn, pcm24("silences.wav"))
        await conn.input_audio_buffer.commit()  # the last utterance, whatever the VAD decided
        events = await read_until(conn, lambda ev: len(completed(ev)) >= 4)
    done = completed(events)
    assert wer(entry["text"], " ".join(e.transcript for e in done)) <= 0.15
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    assert [e.item_id for e in done] == [e.item_id for e in committed][: len(done)]
    assert {e.item_id for e in done} <= {e.item_id for e in started}
    assert committed[0].previous_item_id is None
    assert all(b.previous_item_id == a.item_id for a, b in itertools.pairwise(committed))
    starts = [e.audio_start_ms for e in started]
    first_speech = entry["segments"][0]["start"]
    assert starts == sorted(starts) and abs(starts[0] / 1000 - first_speech) < 0.5
    for item in done:
        deltas = [e.delta for e in events if e.type.endswith(".delta") and e.item_id == item.item_id]
        assert deltas and item.transcript.startswith("".join(deltas)[: len(item.transcript)])
        assert item.usage.type == "duration" and item.usage.seconds > 0  # type: ignore[union-attr]


async def test_manual_commit_pcmu_and_clear(sdk: openai.AsyncOpenAI) -> None:
    session = {
        "type": "transcription",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
    }
    async with sdk.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session=session)  # type: ignore[arg-type]
        await read_until(conn, lambda ev: ev[-1].type == "session.updated")
        await conn.input_audio_buffer.commit(event_id="c0")
        (error,) = await read_until(conn, lambda ev: ev[-1].type == "error")
        assert error.error.code == "input_audio_buffer_commit_empty" and error.error.event_id == "c0"
        await append(conn, mulaw("weather_question.wav"), 4000)
        await conn.input_audio_buffer.clear()
        await read_until(conn, lambda ev: ev[-1].type == "input_audio_buffer.cleared")
        await append(conn, mulaw("quick_fox.wav"), 4000)
        await conn.input_audio_buffer.commit()
        events = await read_until(conn, lambda ev: bool(completed(ev)))
    assert events[0].type == "input_audio_buffer.committed"
    (item,) = completed(events)
    assert item.item_id == events[0].item_id
    assert wer(fixture_entry("quick_fox.wav")["text"], item.transcript) <= 0.15, item.transcript


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_beta_client_and_names(sdk: openai.AsyncOpenAI) -> None:
    async with sdk.beta.realtime.connect(
        model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
    ) as conn:
        await conn.send(
            {
                "type": "transcription_session.update",
                "session": {
                    "input_audio_format": "pcm16",
                    "input_audio_transcription": {"model": "whisper-1", "language": "en"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
                },
            }
        )
        updates = await read_until(conn, lambda ev: ev[-1].type == "transcription_session.updated")
        assert updates[0].type == "session.created"
        assert updates[-1].session.input_audio_format == "pcm16"
        await append(conn, pcm24("reminder.wav") + bytes(24000))  # and 0.5 s of silence
        events = await read_until(conn, lambda ev: bool(completed(ev)))
    assert wer(fixture_entry("reminder.wav")["text"], completed(events)[0].transcript) <= 0.15


async def test_errors_in_openai_shape(sdk: openai.AsyncOpenAI, whisper_server: ServerThread) -> None:
    async with sdk.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        bad = {"type": "transcription", "audio": {"input": {"transcription": {"model": "nope"}}}}
        await conn.session.update(session=bad, event_id="e1")  # type: ignore[arg-type]
        error = await conn.recv()
        assert error.type == "error" and error.error.type == "invalid_request_error"
        assert error.error.param == "session.audio.input.transcription.model" and error.error.event_id == "e1"
        await conn.send({"type": "input_audio_buffer.append", "audio": "not base64!!"})
        error = await conn.recv()
        assert error.type == "error" and error.error.param == "audio"
        await conn.send({"type": "response.create"})
        error = await conn.recv()
        assert error.type == "error" and error.error.param == "type"
    url = f"ws://127.0.0.1:{whisper_server.port}/v1/realtime"
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(
            url, params={"intent": "transcription"}, headers={"Authorization": "Bearer no"}
        ) as ws:
            msg = await ws.receive_json(timeout=WAIT)
            assert msg["type"] == "error" and msg["error"]["code"] == "invalid_api_key"
            assert (await ws.receive(timeout=WAIT)).type is aiohttp.WSMsgType.CLOSE
        # the browser form: the key in Sec-WebSocket-Protocol
        protocols = ("realtime", f"openai-insecure-api-key.{KEY}")
        async with http.ws_connect(url, params={"intent": "transcription"}, protocols=protocols) as ws:
            assert ws.protocol == "realtime"
            assert (await ws.receive_json(timeout=WAIT))["type"] == "session.created"
        async with http.ws_connect(url, params={"model": "gpt-realtime"}, protocols=protocols) as ws:
            msg = await ws.receive_json(timeout=WAIT)
            assert msg["type"] == "error" and msg["error"]["param"] == "intent"


async def test_update_mid_utterance_does_not_cut_it(sdk: openai.AsyncOpenAI) -> None:
    """Language / prompt / keywords change the open session live: the utterance in progress is
    not flushed (one item, the whole sentence); a new turn detection would flush."""
    pcm = pcm24("address_time.wav") + bytes(48000)  # and 1 s of silence
    async with sdk.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await append(conn, pcm[: len(pcm) // 3])
        live = {
            "type": "transcription",
            "audio": {"input": {"transcription": {"language": "en", "keywords": ["Baker"]}}},
        }
        await conn.session.update(session=live)  # type: ignore[arg-type]
        await append(conn, pcm[len(pcm) // 3 :])
        events = await read_until(conn, lambda ev: bool(completed(ev)))
    updated = next(e for e in events if e.type == "session.updated")
    assert updated.session.audio.input.transcription.keywords == ["Baker"]  # type: ignore[union-attr]
    (item,) = completed(events)
    assert wer(fixture_entry("address_time.wav")["text"], item.transcript) <= 0.15, item.transcript


async def test_semantic_vad_keeps_a_paused_sentence_one_item(sdk: openai.AsyncOpenAI) -> None:
    """``semantic_vad``: a 0.6 s pause inside the sentence does not end the item (``server_vad``
    with 200 ms of silence would); the echo keeps OpenAI's names. A bad eagerness is refused in
    OpenAI's shape, naming the field."""
    from tests.perf.turn_set import build

    (item,) = build(only=("reminder#0",))
    pcm = pcm16_bytes(resample(item.audio, 16000, 24000))
    semantic = {"type": "semantic_vad", "eagerness": "auto"}
    session = {**GA_SESSION, "audio": {"input": {**GA_SESSION["audio"]["input"], "turn_detection": semantic}}}  # type: ignore[index]
    async with sdk.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(session=session)  # type: ignore[arg-type]
        updated = await conn.recv()
        assert updated.type == "session.updated"
        td = updated.session.audio.input.turn_detection  # type: ignore[union-attr]
        assert td.type == "semantic_vad" and td.eagerness == "auto"
        await append(conn, pcm)
        events = await read_until(conn, lambda ev: bool(completed(ev)))
        first = completed(events)[0]
        assert wer(item.text, first.transcript) <= 0.2, first.transcript  # the whole sentence
        bad = {"type": "semantic_vad", "eagerness": "fast"}
        wrong = {"type": "transcription", "audio": {"input": {"turn_detection": bad}}}
        await conn.session.update(session=wrong, event_id="e2")  # type: ignore[arg-type]
        error = await read_until(conn, lambda ev: ev[-1].type == "error")
    assert error[-1].error.param == "session.audio.input.turn_detection.eagerness"
    assert error[-1].error.type == "invalid_request_error" and error[-1].error.event_id == "e2"
