"""Bounds on what a request may ask for (issue 23, items 5 and 6), over the real endpoints:

* the upload line (``limits.max_uploads`` decode and transcribe at once; the next waits
  ``limits.upload_wait_s``, then ``capacity`` in each protocol's shape);
* form fields (their number and size; every byte counted);
* a session config's ``prompt``, failover list and names, refused before any work.

The chunked-multipart flood and the decoder bombs, with their memory, are in
tests/reliability/test_hostile_media.py."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import openai
import pytest

from asrhub.errors import HubError
from tests.audio_utils import fixture, fixture_entry, load_wav, wer

from .conftest import AUTH, KEY, ServerThread, make_settings

SPEECH, RATE = load_wav(fixture("quick_fox.wav"))


def wav_of(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.round(np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


LONG = wav_of(np.concatenate([load_wav(fixture("long_40s.wav"))[0]] * 8))
"""5 minutes of speech: eleven engine jobs, seconds of work for tiny.en."""


@pytest.fixture(scope="module")
def one_upload() -> Iterator[ServerThread]:
    """A hub that transcribes one upload at a time and lets the next wait 1 s."""
    settings = make_settings(limits={"max_uploads": 1, "upload_wait_s": 1.0})
    with ServerThread(settings) as server:
        yield server


async def until(check: Any, within: float = 60.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while not await asyncio.to_thread(check):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_uploads_wait_in_line_then_get_capacity_in_each_protocols_shape(
    one_upload: ServerThread,
) -> None:
    """While one long upload holds the only turn, an upload to each batch endpoint waits
    ``upload_wait_s`` and is refused with ``capacity``: 503 with the hub's error event
    (/v1/transcribe), OpenAI's error object (the SDK raises ``InternalServerError``),
    Deepgram's (``asrhub_code``). Then the line is free again and nothing is left."""
    server = one_upload
    hub = server.hub
    quick = wav_of(SPEECH)
    async with aiohttp.ClientSession(headers=AUTH) as http:
        long = asyncio.ensure_future(http.post(f"{server.http}/v1/transcribe", data=io.BytesIO(LONG)))
        assert await until(lambda: server.call(lambda: hub.uploads.busy) == 1)

        async def transcribe() -> tuple[int, dict[str, Any]]:
            async with http.post(f"{server.http}/v1/transcribe", data=quick) as response:
                return response.status, await response.json()

        async def listen() -> tuple[int, dict[str, Any]]:
            async with http.post(f"{server.http}/v1/listen", data=quick) as response:
                return response.status, await response.json()

        def sdk() -> Any:
            with openai.OpenAI(base_url=f"{server.http}/v1", api_key=KEY, max_retries=0) as client:
                with pytest.raises(openai.InternalServerError) as info:
                    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", quick))
                return info.value

        waiting = [transcribe(), listen(), asyncio.to_thread(sdk)]
        (status, body), (dg_status, dg_body), refused = await asyncio.gather(*waiting)
        assert not long.done()  # all three were refused while the long one still ran
        assert (status, body["code"]) == (503, "capacity") and "retry later" in body["message"]
        assert (dg_status, dg_body["asrhub_code"]) == (429, "capacity")  # Deepgram says 429
        assert refused.status_code == 503 and refused.body["code"] == "capacity"  # type: ignore[index]
        async with await long as response:
            assert response.status == 200
            text = (await response.json())["text"]
        assert wer(fixture_entry("long_40s.wav")["text"], text[: len(text) // 8]) <= 0.3, text
        status, body = await transcribe()  # the line is free again
        assert status == 200 and wer(fixture_entry("quick_fox.wav")["text"], body["text"]) <= 0.1
    assert server.call(lambda: (hub.uploads.busy, hub.uploads.waiting)) == (0, 0)


async def test_form_fields_are_bounded_in_number_and_size(whisper_server: ServerThread) -> None:
    """129 form fields, or fields of 320 KB together: 413 ``too_large`` (OpenAI's shape); one
    field over 64 KB too. A form within the bounds is served."""
    quick = wav_of(SPEECH)

    async def post(fields: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("file", quick, filename="a.wav")
        form.add_field("model", "whisper-1")
        for name, values in fields.items():
            for value in values:
                form.add_field(name, value)
        async with (
            aiohttp.ClientSession(headers=AUTH) as http,
            http.post(f"{whisper_server.http}/v1/audio/transcriptions", data=form) as response,
        ):
            return response.status, await response.json()

    for fields in (
        {f"x{i}": ["1"] for i in range(127)},  # 129 parts with file and model
        {f"x{i}": ["x" * 64_000] for i in range(5)},  # 320 KB of fields
        {"prompt": ["x" * 70_000]},  # one field over 64 KB
    ):
        status, body = await post(fields)
        assert status == 413 and body["error"]["code"] == "too_large", body
    status, body = await post({"prompt": ["x" * 5000]})  # a field within bounds, a prompt over its limit
    assert (status, body["error"]["code"]) == (400, "bad_message") and "$.prompt" in body["error"]["message"]
    status, body = await post({f"x{i}": ["1"] for i in range(120)})
    assert status == 200 and wer(fixture_entry("quick_fox.wav")["text"], body["text"]) <= 0.1


async def test_a_huge_prompt_or_failover_list_is_refused_before_any_work(
    whisper_server: ServerThread,
) -> None:
    """A session config with a 5,000-character prompt, a failover list of 9 providers or a
    200-character model name: ``bad_message`` naming the field, and no session (WebSocket
    control messages stop at 64 KB; the in-process API and ``Hub.transcribe`` take anything, so
    a 3 MB prompt is tried there). Before, a prompt of any length was handed to the engine on
    every decode."""
    hub = whisper_server.hub
    configs = {
        "$.prompt": {"prompt": "x" * 5000},
        "$.provider": {"provider": ["whisper"] * 9},
        "$.model": {"model": "m" * 200},
    }
    async with aiohttp.ClientSession(headers=AUTH) as http:
        for path, config in configs.items():
            async with http.ws_connect(f"{whisper_server.ws}") as ws:
                await ws.send_json({"type": "session.start", "config": config})
                event = await ws.receive_json(timeout=30)
                assert (event["type"], event.get("code")) == ("error", "bad_message"), event
                assert path in event["message"]
    assert await whisper_server.no_sessions()

    async def in_process() -> None:
        for attempt in (hub.transcribe(SPEECH, prompt="x" * 3_000_000), asyncio.sleep(0)):
            with pytest.raises(HubError) as info:
                await attempt
                hub.open({"prompt": "x" * 3_000_000})
            assert info.value.code == "bad_message" and "$.prompt" in info.value.message

    asyncio.run_coroutine_threadsafe(in_process(), whisper_server.loop).result(30)
