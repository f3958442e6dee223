"""The hub's own protocol with formatting (config ``format``, issue 27) on a real hub
(faster-whisper tiny.en) and real speech made at set-up: a WebSocket session whose finals are
redacted and profanity-masked, a bad ``format`` refused, ``POST /v1/transcribe`` with the
formatting fields; and OpenAI's ``include[]=logprobs`` with the official SDK. Before issue 27
a config's ``format`` was ignored (as every unknown field is), so the assertions on markers,
masks and refusals fail there."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import aiohttp
import openai
import pytest

from tests.format.recordings import CARD, MONEY, PROFANITY, recording

from .conftest import AUTH, ServerThread, frames

MASKED = re.compile(r"\b[a-zA-Z]\*{3,}")


async def session(server: ServerThread, pcm: bytes, config: dict[str, Any]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.ws, headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": config}))
        started = await ws.receive_json()
        assert started["type"] == "session.started", started
        for frame in frames(pcm):
            await ws.send_bytes(frame)
        await ws.send_str(json.dumps({"type": "session.end"}))
        events: list[dict[str, Any]] = [started]
        async for msg in ws:
            events.append(json.loads(msg.data))
            if events[-1]["type"] == "session.closed":
                break
    return events


async def test_websocket_session_redacts_and_masks_finals_and_partials(whisper_server: ServerThread) -> None:
    pcm, _ = recording(CARD, PROFANITY)
    config = {"language": "en", "format": {"redact": ["pci", "numbers"], "profanity_filter": True}}
    events = await session(whisper_server, pcm, config)
    assert events[0]["config"]["format"] == {
        "numerals": False,
        "profanity_filter": True,
        "redact": ["pci", "numbers"],
        "punctuate": True,
    }
    finals = [e for e in events if e["type"] == "transcript.final"]
    text = " ".join(f["text"] for f in finals)
    assert re.search(r"\[(CREDIT_CARD|NUMBER)\]", text) and MASKED.search(text), text
    assert not re.search(r"\d{3}", text) and "bullshit" not in text.lower(), text
    for final in finals:  # the text is the words, and every word keeps times inside its final
        assert final["text"] == " ".join(w["word"] for w in final["words"])
        assert all(
            final["start"] - 0.5 <= w["start"] <= w["end"] <= final["end"] + 0.5 for w in final["words"]
        )
    for partial in (e for e in events if e["type"] == "transcript.partial"):
        assert not re.search(r"\d{4}\D{0,2}\d{4}\D{0,2}\d{4}", partial["text"]), partial  # no card in clear


async def test_a_bad_format_is_a_bad_message(whisper_server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(whisper_server.ws, headers=AUTH) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": {"format": {"redact": ["names"]}}}))
        error = await ws.receive_json()
    assert error["type"] == "error" and error["code"] == "bad_message" and "redact" in error["message"]


async def test_transcribe_with_formatting_fields(whisper_server: ServerThread) -> None:
    pcm, _ = recording(MONEY, PROFANITY)
    from asrhub.transports.batch import pcm16_wav

    wav = pcm16_wav(pcm, 16000, 1)
    async with aiohttp.ClientSession(headers=AUTH) as http:
        form = aiohttp.FormData()
        form.add_field("file", wav, filename="money.wav", content_type="audio/wav")
        for name, value in (("numerals", "true"), ("profanity_filter", "true"), ("punctuate", "false")):
            form.add_field(name, value)
        async with http.post(f"{whisper_server.http}/v1/transcribe", data=form) as resp:
            body = await resp.json()
            assert resp.status == 200, body
        async with http.post(f"{whisper_server.http}/v1/transcribe?redact=cards", data=wav) as resp:
            refused = await resp.text()
            assert resp.status == 400 and "redact" in refused, refused
    text = body["text"]
    assert "$25" in text and "12%" in text and MASKED.search(text), text
    assert not re.search(r"[.,?!]", text.replace("$25", "").replace("12%", "")), text  # punctuation off
    assert all("bullshit" not in s["text"].lower() for s in body["segments"])


def test_openai_include_logprobs(sdk: openai.OpenAI) -> None:
    pcm, _ = recording(MONEY)
    from asrhub.transports.batch import pcm16_wav

    result = sdk.audio.transcriptions.create(
        model="whisper-1", file=("money.wav", pcm16_wav(pcm, 16000, 1)), include=["logprobs"]
    )
    assert result.logprobs, result
    assert " ".join(p.token or "" for p in result.logprobs) == result.text.strip()
    for p in result.logprobs:
        assert p.logprob is not None and p.logprob <= 0.0 and math.exp(p.logprob) > 0
        assert bytes(int(b) for b in p.bytes or []) == (p.token or "").encode()
    with pytest.raises(openai.BadRequestError, match="include"):
        sdk.audio.transcriptions.create(
            model="whisper-1",
            file=("money.wav", pcm16_wav(pcm, 16000, 1)),
            include=["everything"],  # type: ignore[list-item]
        )
