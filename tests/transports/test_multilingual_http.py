"""Models, translation and key terms over HTTP: the official ``openai`` SDK against the hub's
OpenAI-compatible endpoints, and the hub's own ``POST /v1/transcribe``, on a real server whose
whisper provider offers tiny.en (default) and the multilingual base."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.audio_utils import fixture, fixture_entry, normalize_text

from .conftest import AUTH, ServerThread


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations so
def test_openai_translations_endpoint_gives_english(sdk: openai.OpenAI) -> None:
    with open(fixture("spanish.wav"), "rb") as fh:
        result = sdk.audio.translations.create(model="whisper-base", file=fh, response_format="verbose_json")
    words = set(normalize_text(result.text).split())
    assert set(fixture_entry("spanish.wav")["translation_words"]) <= words, result.text
    assert result.language == "es" and getattr(result, "task", None) == "translate"
    with open(fixture("spanish.wav"), "rb") as fh, pytest.raises(openai.BadRequestError) as err:
        sdk.audio.translations.create(model="whisper-1", file=fh)  # the default model is tiny.en
    assert "English-only" in str(err.value)


def test_openai_stream_true_with_a_model(sdk: openai.OpenAI, whisper_server: ServerThread) -> None:
    with open(fixture("german.wav"), "rb") as fh:
        events = list(sdk.audio.transcriptions.create(model="whisper:base", file=fh, stream=True))
    done = events[-1]
    assert done.type == "transcript.text.done" and "zug" in normalize_text(done.text), done.text
    assert whisper_server.open_sessions() == 0


def test_openai_model_names_pick_the_model(sdk: openai.OpenAI) -> None:
    with open(fixture("german.wav"), "rb") as fh:
        text = sdk.audio.transcriptions.create(model="base", file=fh, response_format="text")
    assert "berlin" in normalize_text(text) and "zug" in normalize_text(text), text
    with open(fixture("german.wav"), "rb") as fh, pytest.raises(openai.BadRequestError) as err:
        sdk.audio.transcriptions.create(model="whisper:tiny.en", file=fh, language="de")
    assert "unsupported language de" in str(err.value)
    with open(fixture("german.wav"), "rb") as fh, pytest.raises(openai.BadRequestError) as err:
        sdk.audio.transcriptions.create(model="whisper-large-v9", file=fh)
    assert err.value.code == "unknown_provider" and "whisper:base" in str(err.value)
    listed = {m.id: m for m in sdk.models.list().data}
    models = listed["whisper"].model_extra["info"]["models"]  # type: ignore[index]
    assert models["tiny.en"]["default"] and models["tiny.en"]["languages"] == ["en"]
    assert "zh" in models["base"]["languages"] and not models["base"]["default"]


async def test_transcribe_endpoint_takes_model_and_keyterms(whisper_server: ServerThread) -> None:
    entry = fixture_entry("keyterms.wav")
    audio = fixture("keyterms.wav").read_bytes()
    url = f"{whisper_server.http}/v1/transcribe"
    async with aiohttp.ClientSession() as http:
        form = aiohttp.FormData()
        form.add_field("file", audio, filename="keyterms.wav")
        form.add_field("model", "whisper:tiny.en")
        for term in entry["keyterms"]:
            form.add_field("keyterms", term)
        async with http.post(url, data=form, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            hinted = await resp.json()
        async with http.post(url, data=audio, params={"model": "base"}, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
            detected = await resp.json()
    assert "vortalix" in normalize_text(hinted["text"]), hinted["text"]
    assert detected["language"] == "en" and 0.5 < detected["language_probability"] <= 1.0
