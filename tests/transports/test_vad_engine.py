"""``vad.engine`` over the native WebSocket, against real hub servers (provider ``none``, the
real Silero model): the server default fills a config that names none, ``session.update``
switches the engine from the next utterance (music that webrtcvad calls speech opens nothing
under Silero), a bad engine name is a ``bad_message`` naming the field, and a hub whose default
is Silero refuses to start without its model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asrhub.errors import HubError
from asrhub.plugin import ProviderUnavailable
from asrhub.settings.schema import VadSettings
from asrhub.wiring import build_hub
from tests.audio_utils import pcm16_bytes, tones

from .conftest import AUTH, ServerThread, frames, make_settings, speech

GAP = b"\0\0" * 16_000  # 1 s of silence: the utterance ends before what follows
MUSIC = pcm16_bytes(tones(3.0))


@pytest.fixture(scope="module")
def webrtc_server() -> Iterator[ServerThread]:
    with ServerThread(make_settings(provider="none")) as server:
        yield server


@pytest.fixture(scope="module")
def silero_server() -> Iterator[ServerThread]:
    with ServerThread(make_settings(provider="none", vad=VadSettings(engine="silero"))) as server:
        yield server


async def exchange(url: str, messages: list[dict[str, Any] | bytes]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(url, headers=AUTH) as ws:
        for message in messages:
            if isinstance(message, bytes):
                for frame in frames(message):
                    await ws.send_bytes(frame)
            else:
                await ws.send_str(json.dumps(message))
        return [json.loads(m.data) async for m in ws if m.type is aiohttp.WSMsgType.TEXT]


async def test_update_switches_engine_from_the_next_utterance(webrtc_server: ServerThread) -> None:
    pcm, _ = speech("weather_question.wav")
    events = await exchange(
        webrtc_server.ws,
        [
            {"type": "session.start", "config": {"provider": "none"}},
            pcm + GAP + MUSIC + GAP,
            {"type": "session.update", "config": {"vad": {"engine": "silero"}}},
            pcm + GAP + MUSIC + GAP,
            {"type": "session.update", "config": {"vad": {"engine": "sil3ro"}}},
            {"type": "session.end"},
        ],
    )
    types = [e["type"] for e in events]
    assert events[0]["config"]["vad"]["engine"] == "webrtc", events[0]  # the hub's default
    update = types.index("session.updated")
    assert events[update]["config"]["vad"]["engine"] == "silero"
    before, after = types[:update], types[update:]
    assert before.count("vad.speech_started") >= 2  # the speech, then the music (webrtc)
    assert after.count("vad.speech_started") == 1 and after.count("vad.speech_ended") == 1  # speech only
    (error,) = [e for e in events if e["type"] == "error"]
    assert error["code"] == "bad_message" and not error["fatal"]
    assert "$.vad.engine" in error["message"] and "sil3ro" in error["message"], error
    assert types[-1] == "session.closed"


async def test_bad_engine_at_start_is_bad_message(webrtc_server: ServerThread) -> None:
    events = await exchange(
        webrtc_server.ws,
        [{"type": "session.start", "config": {"provider": "none", "vad": {"engine": "rnnoise"}}}],
    )
    error = events[0]
    assert error["type"] == "error" and error["code"] == "bad_message", events
    assert "$.vad.engine" in error["message"], error


async def test_silero_default_and_an_explicit_webrtc(silero_server: ServerThread) -> None:
    pcm, _ = speech("weather_question.wav")
    default = await exchange(
        silero_server.ws,
        [
            {"type": "session.start", "config": {"provider": "none"}},
            pcm + GAP + MUSIC + GAP,
            {"type": "session.end"},
        ],
    )
    assert default[0]["config"]["vad"]["engine"] == "silero"
    assert [e["type"] for e in default].count("vad.speech_started") == 1
    chosen = await exchange(
        silero_server.ws,
        [
            {"type": "session.start", "config": {"provider": "none", "vad": {"engine": "webrtc"}}},
            pcm + GAP + MUSIC + GAP,
            {"type": "session.end"},
        ],
    )
    assert chosen[0]["config"]["vad"]["engine"] == "webrtc"
    assert [e["type"] for e in chosen].count("vad.speech_started") >= 2


async def test_silero_default_without_the_model_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASRHUB_MODEL_DIR", str(tmp_path))
    no_turns = {"semantic_turns": False}  # the empty model dir has no smart-turn model either
    hub = build_hub(make_settings(provider="none", vad=VadSettings(engine="silero"), limits=no_turns))
    with pytest.raises(ProviderUnavailable) as caught:  # `asrhub serve` prints it and exits 1
        await hub.start()
    assert "silero_vad.onnx" in str(caught.value) and "scripts/setup.sh" in str(caught.value)
    webrtc = build_hub(make_settings(provider="none", limits=no_turns))
    await webrtc.start()  # a webrtc hub starts; a session asking for Silero is refused
    with pytest.raises(HubError) as refused:
        webrtc.open({"provider": "none", "vad": {"engine": "silero"}})
    assert refused.value.code == "provider_failed" and "scripts/setup.sh" in str(refused.value)
    session = webrtc.open({"provider": "none"})
    with pytest.raises(HubError) as update:  # and so is a switch to it (the session goes on)
        webrtc.update(session, {"vad": {"engine": "silero"}})
    assert update.value.code == "provider_failed" and not update.value.fatal
    assert session.config.vad.engine == "webrtc"
    session.close()


def test_realtime_server_vad_threshold_reaches_the_silero_threshold() -> None:
    from asrhub.transports.realtime_config import RealtimeConfig

    td = {"type": "server_vad", "threshold": 0.8, "silence_duration_ms": 600}
    vad = RealtimeConfig(turn_detection=td).session_config()["vad"]
    assert vad["threshold"] == 0.8 and vad["aggressiveness"] == 3  # whichever engine the session runs
