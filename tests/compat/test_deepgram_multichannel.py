"""Deepgram's ``multichannel`` through the official ``deepgram-sdk`` (7.x) on a real hub
(faster-whisper tiny.en) and real stereo audio (two recordings, one per channel,
tests/stereo_audio.py): pre-recorded ``results.channels[i]`` one per channel, live ``Results``
with ``channel_index: [i, 2]``; each side's words only on its own channel; more channels than
``limits.max_channels`` refused with a 400. Before issue 27 ``multichannel=true`` was answered
with HTTP 400, so every test here fails on that code."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import aiohttp
import httpx
import pytest

from tests.compat.test_deepgram import WAIT, Messages, client_for, stream
from tests.stereo_audio import LEFT_WORDS, RIGHT_WORDS, stereo_pcm, stereo_wav, words_of
from tests.transports.conftest import KEY, ServerThread

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets.legacy"),
]


def assert_sides(left: set[str], right: set[str]) -> None:
    assert len(left & LEFT_WORDS) >= 2 and not left & RIGHT_WORDS, (left, right)
    assert len(right & RIGHT_WORDS) >= 2 and not right & LEFT_WORDS, (left, right)


async def test_prerecorded_multichannel_wav_and_raw_pcm(whisper_server: ServerThread) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        client = client_for(whisper_server, http=http)
        result = await client.listen.v1.media.transcribe_file(
            request=stereo_wav(), model="nova-3", multichannel=True, utterances=True
        )
        raw = await client.listen.v1.media.transcribe_file(  # the SDK's sample_rate/channels: extra query
            request=stereo_pcm(),
            model="nova-3",
            encoding="linear16",
            multichannel=True,
            request_options={"additional_query_parameters": {"sample_rate": 16000, "channels": 2}},
        )
        mixed = await client.listen.v1.media.transcribe_file(request=stereo_wav(), model="nova-3")
    for answer in (result, raw):
        channels = answer.results.channels
        assert len(channels) == 2 and answer.metadata.channels == 2
        left, right = (words_of(c.alternatives[0].transcript) for c in channels)
        assert_sides(left, right)
        right_words = channels[1].alternatives[0].words
        assert right_words and right_words[0].start >= 1.5  # the right side starts 2 s in
    utterances = result.results.utterances
    assert utterances and {u.channel for u in utterances} == {0, 1}
    for u in utterances:
        assert not words_of(u.transcript) & (RIGHT_WORDS if u.channel == 0 else LEFT_WORDS), u
    # without multichannel: one channel, both sides mixed (as before)
    assert len(mixed.results.channels) == 1 and mixed.metadata.channels == 1
    heard = words_of(mixed.results.channels[0].alternatives[0].transcript)
    assert heard & LEFT_WORDS and heard & RIGHT_WORDS, heard


async def test_live_multichannel_channel_index(whisper_server: ServerThread) -> None:
    async with client_for(whisper_server).listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate="16000",
        channels="2",
        multichannel="true",
        interim_results="true",
        vad_events="true",
    ) as conn:
        got = Messages()
        reader = asyncio.create_task(got.read(conn))
        await stream(conn, stereo_pcm(), chunk=6400)
        await conn.send_close_stream()
        await asyncio.wait_for(reader, WAIT)
    finals = [r for r in got.of("Results") if r.is_final]
    assert {tuple(r.channel_index) for r in got.of("Results")} <= {(0, 2), (1, 2)}
    words: dict[int, set[str]] = {0: set(), 1: set()}
    for r in finals:
        words[r.channel_index[0]] |= words_of(r.channel.alternatives[0].transcript)
    assert_sides(words[0], words[1])
    for channel in (0, 1):  # each channel's finals in time order
        starts = [r.start for r in finals if r.channel_index[0] == channel]
        assert starts == sorted(starts)
    assert {tuple(s.channel) for s in got.of("SpeechStarted")} == {(0, 2), (1, 2)}
    (metadata,) = got.of("Metadata")
    assert metadata.channels == 2
    assert await whisper_server.no_sessions()


async def test_multichannel_refusals_in_deepgram_shape(whisper_server: ServerThread) -> None:
    async def post(data: bytes, **params: Any) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as http:
            url = f"{whisper_server.http}/v1/listen"
            async with http.post(
                url, data=io.BytesIO(data), params=params, headers={"Authorization": f"Token {KEY}"}
            ) as resp:
                return resp.status, await resp.json()

    status, body = await post(stereo_wav(channels=9), multichannel="true")
    assert status == 400 and body["asrhub_code"] == "bad_audio" and "at most 8" in body["err_msg"], body
    async with aiohttp.ClientSession() as http:
        url = f"ws://127.0.0.1:{whisper_server.port}/v1/listen"
        params = {"encoding": "linear16", "channels": "9", "multichannel": "true"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(url, params=params, headers={"Authorization": f"Token {KEY}"}):
                pass
    assert refused.value.status == 400
