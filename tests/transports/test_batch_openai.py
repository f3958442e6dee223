"""Whole-file transcription: POST /v1/transcribe and the OpenAI-compatible endpoints, the latter
driven by the official ``openai`` SDK."""

from __future__ import annotations

import asyncio
import io
import re

import aiohttp
import openai
import pytest

from tests.audio_utils import encode, fixture, fixture_entry, load_wav, wer

from .conftest import AUTH, ServerThread


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "opus", "webm"])
async def test_transcribe_multipart_any_encoding(whisper_server: ServerThread, fmt: str) -> None:
    samples, rate = load_wav(fixture("weather_question.wav"))
    data = encode(samples, rate, fmt)
    form = aiohttp.FormData()
    form.add_field("file", data, filename=f"clip.{fmt}", content_type="application/octet-stream")
    form.add_field("language", "en")
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{whisper_server.http}/v1/transcribe", data=form, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
    assert wer(fixture_entry("weather_question.wav")["text"], body["text"]) <= 0.1, body["text"]
    assert body["provider"] == "whisper" and abs(body["duration"] - 3.39) < 0.1
    segment = body["segments"][0]
    assert segment["type"] == "transcript.final" and segment["provider"] == "whisper"
    assert 0.0 <= segment["start"] < segment["end"] <= body["duration"] + 0.05


async def test_transcribe_raw_body_of_a_long_file(whisper_server: ServerThread) -> None:
    """A file over 30 s (whisper's window) as the raw body."""
    entry = fixture_entry("long_40s.wav")
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{whisper_server.http}/v1/transcribe",
            data=fixture("long_40s.wav").open("rb"),
            params={"language": "en"},
            headers=AUTH,
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
    assert wer(entry["text"], body["text"]) <= 0.1
    assert len(body["segments"]) > 1
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts) and body["segments"][-1]["end"] > 30.0


async def test_the_api_and_http_give_the_same_finals_for_a_long_file(whisper_server: ServerThread) -> None:
    """A final is built one way: the in-process API (``atranscribe_file``) and ``POST
    /v1/transcribe`` on the same hub give the same ``transcript.final`` events for a file longer
    than one job — ids from 1, text stripped, times to the millisecond, the same words."""
    from asrhub.api import atranscribe_file

    data = fixture("long_40s.wav").read_bytes()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{whisper_server.http}/v1/transcribe",
            data=io.BytesIO(data),
            params={"language": "en"},
            headers=AUTH,
        ) as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
    on_its_loop = asyncio.run_coroutine_threadsafe(
        atranscribe_file(data, hub=whisper_server.hub, language="en"), whisper_server.loop
    )
    result = await asyncio.wrap_future(on_its_loop)
    assert len(body["segments"]) > 1 and body["segments"][-1]["end"] > 30.0
    assert [s["segment_id"] for s in body["segments"]] == list(range(1, len(body["segments"]) + 1))
    assert [f.to_dict() for f in result.segments] == body["segments"]
    assert result.text.strip() == body["text"] and result.provider == body["provider"]


async def test_transcribe_errors(whisper_server: ServerThread) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{whisper_server.http}/v1/transcribe"
        async with http.post(url, data=b"this is not audio at all" * 100, headers=AUTH) as resp:
            error = await resp.json()
            assert resp.status == 400 and error["code"] == "bad_audio" and error["message"]
        async with http.post(url, data=b"", headers=AUTH) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "bad_message"
        form = aiohttp.FormData()
        form.add_field("file", fixture("quick_fox.wav").read_bytes(), filename="a.wav")
        form.add_field("provider", "nope")
        async with http.post(url, data=form, headers=AUTH) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == "unknown_provider"


def test_openai_sdk_json_and_text(sdk: openai.OpenAI) -> None:
    reference = fixture_entry("science.wav")["text"]
    with open(fixture("science.wav"), "rb") as fh:
        result = sdk.audio.transcriptions.create(model="whisper-1", file=fh, language="en")
    assert wer(reference, result.text) <= 0.1, result.text
    with open(fixture("science.wav"), "rb") as fh:
        text = sdk.audio.transcriptions.create(model="whisper", file=fh, response_format="text")
    assert isinstance(text, str) and text.endswith("\n") and wer(reference, text) <= 0.1


def test_openai_sdk_srt_and_vtt(sdk: openai.OpenAI) -> None:
    reference = fixture_entry("long_40s.wav")["text"]
    with open(fixture("long_40s.wav"), "rb") as fh:
        srt = sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="srt")
    blocks = srt.strip().split("\n\n")
    assert len(blocks) > 1
    for i, block in enumerate(blocks, start=1):
        number, times, *lines = block.split("\n")
        assert number == str(i) and lines
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", times)
    assert wer(reference, " ".join(b.split("\n", 2)[2] for b in blocks)) <= 0.1
    with open(fixture("quick_fox.wav"), "rb") as fh:
        vtt = sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n")
    cue = vtt.split("\n\n")[1].split("\n")
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", cue[0])
    assert wer(fixture_entry("quick_fox.wav")["text"], " ".join(cue[1:])) <= 0.1


def test_openai_sdk_verbose_json_with_words(sdk: openai.OpenAI) -> None:
    entry = fixture_entry("reminder.wav")
    with open(fixture("reminder.wav"), "rb") as fh:
        result = sdk.audio.transcriptions.create(
            model="whisper-1",
            file=fh,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            temperature=0.0,
        )
    assert result.language == "en" and abs(result.duration - entry["duration"]) < 0.1
    assert wer(entry["text"], result.text) <= 0.1
    assert result.segments and result.segments[0].id == 0
    seg = result.segments[0]
    assert 0 <= seg.start < seg.end <= result.duration + 0.05 and seg.temperature == 0.0
    # the engine's own signals, not constants: clear speech decodes with a negative mean
    # log-probability, a low no-speech probability and a compression ratio above 0
    assert -1.0 < seg.avg_logprob < 0.0
    assert 0.0 <= seg.no_speech_prob < 0.5
    assert 0.5 < seg.compression_ratio < 2.4
    assert result.words and len(result.words) >= 10
    assert all(w.start <= w.end for w in result.words)
    assert wer(entry["text"], " ".join(w.word for w in result.words)) <= 0.15
    with open(fixture("reminder.wav"), "rb") as fh:
        plain = sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert plain.segments and not plain.words


def test_openai_sdk_models_and_errors(sdk: openai.OpenAI) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert "whisper" in ids and "whisper-1" in ids
    with open(fixture("quick_fox.wav"), "rb") as fh, pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model="no-such-model", file=fh)
    assert info.value.status_code == 400
    body = info.value.body
    assert (
        isinstance(body, dict) and body["code"] == "unknown_provider" and "no-such-model" in body["message"]
    )
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model="whisper-1", file=("x.mp3", b"garbage" * 50))
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "bad_audio"
    with open(fixture("quick_fox.wav"), "rb") as fh, pytest.raises(openai.BadRequestError):
        # diarized_json is served (tests/transports/test_diarization.py); named speakers are not
        sdk.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="diarized_json", known_speaker_names=["Ann"]
        )
