"""Multichannel on the hub's own protocol (issue 27 item 2) — WebSocket, HTTP+SSE and
``/v1/transcribe`` — with a real hub (faster-whisper tiny.en) and real stereo audio (two
recordings, one per channel): each side's words come on its own ``channel``, none leak across;
without ``multichannel`` the channels are mixed to mono as before; more channels than
``limits.max_channels`` is refused. Before issue 27 ``multichannel`` was ignored (the stereo was
downmixed: no ``channel`` on any event), so these assertions fail (all but the downmix one)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.stereo_audio import LEFT_WORDS, RIGHT_WORDS, stereo_pcm, stereo_wav, words_of

from .conftest import AUTH, ServerThread

STEREO = {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 2}


async def session(
    server: ServerThread, audio: bytes, config: dict[str, Any], frame: int = 6400, resume: bool = False
) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws, headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": config, "resume": resume}))
        events: list[dict[str, Any]] = [await ws.receive_json()]
        if events[0]["type"] != "session.started":
            return events
        for i in range(0, len(audio), frame - 2):  # odd cuts: sample frames split across messages
            await ws.send_bytes(audio[i : i + frame - 2])
        await ws.send_str(json.dumps({"type": "session.end"}))
        async for msg in ws:
            events.append(json.loads(msg.data))
            if events[-1]["type"] == "session.closed":
                break
    return events


def by_channel(events: list[dict[str, Any]]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for event in events:
        if event["type"] == "transcript.final":
            out.setdefault(event["channel"], set()).update(words_of(event["text"]))
    return out


def assert_sides(events: list[dict[str, Any]]) -> None:
    words = by_channel(events)
    assert set(words) == {0, 1}, events
    assert len(words[0] & LEFT_WORDS) >= 2 and not words[0] & RIGHT_WORDS, words
    assert len(words[1] & RIGHT_WORDS) >= 2 and not words[1] & LEFT_WORDS, words
    for channel in (0, 1):  # each channel's finals in order, numbered on their own
        finals = [e for e in events if e["type"] == "transcript.final" and e["channel"] == channel]
        assert [f["segment_id"] for f in finals] == sorted(f["segment_id"] for f in finals)
        assert all(w["start"] >= finals[0]["start"] - 0.5 for f in finals for w in f["words"])
    right = [e for e in events if e["type"] == "transcript.final" and e["channel"] == 1]
    assert right[0]["start"] >= 1.5, right  # the right side starts 2 s in: its own clock is the stream's
    started = [e["channel"] for e in events if e["type"] == "vad.speech_started"]
    assert sorted(set(started)) == [0, 1], started
    assert events[-1] == {"type": "session.closed", "reason": "end"}


async def test_live_stereo_pcm_gives_each_side_its_words(whisper_server: ServerThread) -> None:
    events = await session(
        whisper_server, stereo_pcm(), {"language": "en", "multichannel": True, "audio": STEREO}, resume=True
    )
    assert events[0]["config"]["multichannel"] is True
    assert "resume_token" not in events[0]  # utterances numbered per channel: not resumable
    assert_sides(events)
    assert await whisper_server.no_sessions()


async def test_stereo_wav_stream_takes_its_channels_from_the_header(whisper_server: ServerThread) -> None:
    config = {"language": "en", "multichannel": True, "audio": {"encoding": "wav"}}
    assert_sides(await session(whisper_server, stereo_wav(), config))


async def test_without_multichannel_the_channels_are_mixed_as_before(whisper_server: ServerThread) -> None:
    events = await session(whisper_server, stereo_pcm(), {"language": "en", "audio": STEREO})
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert finals and all("channel" not in e for e in events), events
    heard = set().union(*(words_of(f["text"]) for f in finals))
    assert heard & LEFT_WORDS and heard & RIGHT_WORDS, heard  # both sides, in one mono stream


async def test_more_channels_than_the_limit_are_refused(whisper_server: ServerThread) -> None:
    config = {"multichannel": True, "audio": {**STEREO, "channels": 9}}
    events = await session(whisper_server, b"", config)
    assert events[0]["type"] == "error" and events[0]["code"] == "bad_message", events
    assert "at most 8" in events[0]["message"]
    wav = {"language": "en", "multichannel": True, "audio": {"encoding": "wav"}}
    # the header alone: the refusal comes at once (audio still streaming at a socket the hub
    # closed could reset the connection before its last messages are read)
    events = await session(whisper_server, stereo_wav(channels=9)[:1024], wav)
    errors = [e for e in events if e["type"] == "error"]
    assert errors and errors[0]["code"] == "bad_audio" and errors[0]["fatal"], events
    assert "at most 8" in errors[0]["message"]
    assert not any(e["type"] == "transcript.final" for e in events)


async def test_transcribe_file_multichannel(whisper_server: ServerThread) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        form = aiohttp.FormData()
        form.add_field("file", stereo_wav(), filename="call.wav", content_type="audio/wav")
        form.add_field("multichannel", "true")
        form.add_field("language", "en")
        async with http.post(f"{whisper_server.http}/v1/transcribe", data=form) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        async with http.post(
            f"{whisper_server.http}/v1/transcribe?multichannel=true", data=b"OggS" + bytes(64)
        ) as resp:
            refused = await resp.json()
            assert resp.status == 400, refused
    assert [c["channel"] for c in body["channels"]] == [0, 1]
    assert_sides(
        [{"type": "vad.speech_started", "channel": c} for c in (0, 1)]
        + body["segments"]
        + [{"type": "session.closed", "reason": "end"}]
    )
    assert [s["start"] for s in body["segments"]] == sorted(s["start"] for s in body["segments"])


async def test_http_session_with_sse_events(whisper_server: ServerThread) -> None:
    from .test_sse import post_audio, read_sse

    base = whisper_server.http
    config = {"language": "en", "multichannel": True, "audio": STEREO}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/sessions", json={"config": config}, headers=AUTH) as resp:
            assert resp.status == 201, await resp.text()
            sid = (await resp.json())["session_id"]
        events: list[dict[str, Any]] = []

        async def subscribe() -> None:
            async with http.get(f"{base}/v1/sessions/{sid}/events", headers=AUTH) as resp:
                async for event in read_sse(resp):
                    events.append(event)

        reader = asyncio.create_task(subscribe())
        await post_audio(http, base, sid, stereo_pcm())
        async with http.post(f"{base}/v1/sessions/{sid}/end", headers=AUTH) as resp:
            assert resp.status == 200
        await asyncio.wait_for(reader, 60)
    assert_sides(events)
