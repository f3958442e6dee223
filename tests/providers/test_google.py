"""The ``google`` provider: the official google-cloud-speech client, unchanged, against a local
gRPC server implementing ``google.cloud.speech.v1.Speech`` (tests/servers/google_speech_server.py,
which transcribes for real with faster-whisper tiny.en). No call reaches Google.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from asrhub.config import SessionConfig
from asrhub.engine.registry import ProviderRegistry
from asrhub.frames import ErrorEvent, FinalTranscript, PartialTranscript
from asrhub.hub import Hub
from asrhub.plugin import ProviderError, ProviderUnavailable
from asrhub.providers.google import GoogleProvider, parse_settings
from tests.audio_utils import fixture, fixture_entry, load_wav, wer
from tests.providers.funasr_google_driver import (
    batch_mode_final,
    check_order,
    drive_stage,
    hub_session,
    updated_between_utterances,
)
from tests.servers.google_speech_server import LocalSpeechServer

FOX = "quick_fox.wav"


@pytest.fixture
async def server() -> AsyncIterator[LocalSpeechServer]:
    local = LocalSpeechServer()
    await local.start()
    yield local
    await local.close()


async def provider_for(server: LocalSpeechServer, **settings: object) -> GoogleProvider:
    """A started provider on the local server; generous deadline unless a test sets one."""
    options = {"endpoint": server.endpoint, "insecure": True, "timeout": 120.0, **settings}
    provider = GoogleProvider(parse_settings(options))
    await provider.start()
    return provider


@pytest.fixture
def no_adc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine without Application Default Credentials (and no metadata server probe)."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")


# ---------------------------------------------------------------------- recognize (batch)


async def test_recognize_sends_settings_and_returns_words(server: LocalSpeechServer) -> None:
    provider = await provider_for(
        server, language_code="en-GB", model="latest_short", phrases=["fox"], boost=8
    )
    samples, _ = load_wav(fixture(FOX))
    try:
        result = await provider.transcribe(samples, prompt="lazy dog")
    finally:
        await provider.close()
    assert server.calls == ["Recognize"]
    (config,) = server.configs
    assert config.language_code == "en-GB" and config.model == "latest_short"
    assert config.sample_rate_hertz == 16000 and config.enable_word_time_offsets
    assert list(config.speech_contexts[0].phrases) == ["fox", "lazy", "dog"]
    assert config.speech_contexts[0].boost == 8
    assert wer(fixture_entry(FOX)["text"], result.text) <= 0.15
    assert result.language == "en-gb" and result.words is not None
    assert all(0.0 <= w.start <= w.end <= result.duration + 0.01 for w in result.words)
    assert all(0.0 < w.probability <= 1.0 for w in result.words)


async def test_long_audio_is_cut_under_the_one_minute_limit(server: LocalSpeechServer) -> None:
    """Recognize refuses over a minute; 70 s of audio goes as two calls, times offset."""
    speech, _ = load_wav(fixture(FOX))
    samples = np.concatenate([np.zeros(56 * 16000, np.float32), speech, np.zeros(10 * 16000, np.float32)])
    provider = await provider_for(server)
    try:
        result = await provider.transcribe(samples)
    finally:
        await provider.close()
    assert server.calls == ["Recognize", "Recognize"]
    assert wer(fixture_entry(FOX)["text"], result.text) <= 0.25
    assert result.words and 55.0 <= result.words[0].start < result.words[-1].end <= 60.0


# ---------------------------------------------------------------------- streaming


async def test_streaming_session_end_to_end_partials_then_final(server: LocalSpeechServer) -> None:
    from asrhub.wiring import build_pipeline

    server.interim_every_s = 1.5
    provider = await provider_for(server)
    try:
        hub = Hub(providers={"google": provider}, pipeline_factory=build_pipeline, default_provider="google")
        events = await hub_session(hub, {"language": "en-US"}, "address_time.wav")
    finally:
        await provider.close()
    (final,) = check_order(events)
    assert isinstance(final, FinalTranscript) and final.provider == "google"
    partials = [e for e in events if isinstance(e, PartialTranscript)]
    assert partials and all(p.segment_id == final.segment_id for p in partials)
    assert wer(fixture_entry("address_time.wav")["text"], final.text) <= 0.25
    assert final.words and final.start <= final.words[0].start < final.words[-1].end <= final.end + 0.05
    assert server.calls == ["StreamingRecognize"]


async def test_session_update_holds_for_the_next_utterances_streams(server: LocalSpeechServer) -> None:
    """A ``session.update`` between utterances: the streams that follow carry the new language,
    key terms and partials setting; the one before kept the start config."""
    server.interim_every_s = 1.0
    provider = await provider_for(server)
    try:
        events = await updated_between_utterances(provider, "google", "en-US", "en-GB")
    finally:
        await provider.close()
    configs = server.streaming_configs
    assert len(configs) == len(check_order(events))
    assert configs[0].config.language_code == "en-US" and configs[0].interim_results
    for later in configs[1:]:
        assert later.config.language_code == "en-GB" and not later.interim_results
        assert "Zorblax" in later.config.speech_contexts[0].phrases


async def test_streaming_stage_several_utterances_in_order(server: LocalSpeechServer) -> None:
    server.interim_every_s = 2.0
    provider = await provider_for(server)
    try:
        frames = await drive_stage(provider, "silences.wav", pace_s=0.01, utterances=3)
    finally:
        await provider.close()
    finals = check_order(frames)
    segments = fixture_entry("silences.wav")["segments"][:3]
    assert [f.segment_id for f in finals] == [1, 2, 3]
    for final, segment in zip(finals, segments, strict=True):
        assert isinstance(final, FinalTranscript)
        assert wer(segment["text"], final.text) <= 0.25
    assert server.calls == ["StreamingRecognize"] * 3


async def test_no_partials_asked_means_no_interim_results(server: LocalSpeechServer) -> None:
    provider = await provider_for(server)
    try:
        frames = await drive_stage(provider, FOX, config=SessionConfig(partials=False), pace_s=0.0)
    finally:
        await provider.close()
    (final,) = check_order(frames)
    assert isinstance(final, FinalTranscript) and not any(isinstance(f, PartialTranscript) for f in frames)
    assert [c.interim_results for c in server.streaming_configs] == [False]


async def test_batch_mode_session_uses_recognize(server: LocalSpeechServer) -> None:
    provider = await provider_for(server, streaming=False)
    final = await batch_mode_final(provider, "google", "science.wav")
    assert wer(fixture_entry("science.wav")["text"], final.text) <= 0.25
    assert set(server.calls) == {"Recognize"}


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "Invalid recognition 'config': bad encoding."),
        (grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."),
    ],
)
async def test_api_errors_become_provider_failed_with_the_message_and_no_retry(
    server: LocalSpeechServer, code: grpc.StatusCode, message: str
) -> None:
    server.fault, server.fault_message = code, message
    provider = await provider_for(server)
    samples, _ = load_wav(fixture(FOX))
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError, match=f"google: {code.name}: {message}"):
            await provider.transcribe(samples)
        assert server.calls == ["Recognize"], "retry=None: exactly one attempt"
        assert time.monotonic() - started < 5.0

        frames = await drive_stage(provider, FOX, pace_s=0.0)
    finally:
        await provider.close()
    (error,) = check_order(frames)
    assert isinstance(error, ErrorEvent) and error.code == "provider_failed" and not error.fatal
    assert error.message == f"google: {code.name}: {message}" and error.segment_id == 1
    assert server.calls == ["Recognize", "StreamingRecognize"]


async def test_mid_stream_unavailable_fails_the_utterance(server: LocalSpeechServer) -> None:
    server.fault, server.fault_after_bytes = grpc.StatusCode.UNAVAILABLE, 16_000
    server.fault_message = "Connection reset by peer"
    provider = await provider_for(server)
    try:
        frames = await drive_stage(provider, FOX, pace_s=0.0)
    finally:
        await provider.close()
    (error,) = check_order(frames)
    assert isinstance(error, ErrorEvent) and "UNAVAILABLE: Connection reset by peer" in error.message


async def test_a_real_invalid_argument_from_validation(server: LocalSpeechServer) -> None:
    """Not injected: this English-only server rejects a language it cannot serve."""
    provider = await provider_for(server)
    samples, _ = load_wav(fixture(FOX))
    try:
        with pytest.raises(ProviderError, match=r"INVALID_ARGUMENT.*ko-KR"):
            await provider.transcribe(samples, language="ko-KR")
    finally:
        await provider.close()


async def test_deadline_fails_instead_of_hanging(server: LocalSpeechServer) -> None:
    server.delay_s = 30.0
    provider = await provider_for(server, timeout=1.0)
    samples, _ = load_wav(fixture(FOX))
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError, match="DEADLINE_EXCEEDED"):
            await provider.transcribe(samples)
        assert time.monotonic() - started < 5.0
        frames = await drive_stage(provider, FOX, pace_s=0.0)
    finally:
        await provider.close()
    (error,) = check_order(frames)
    assert isinstance(error, ErrorEvent) and "no final result within 1 s" in error.message


# ---------------------------------------------------------------------- credentials and registry


@pytest.mark.usefixtures("no_adc")
async def test_missing_credentials_is_a_clear_error_at_start_up() -> None:
    registry = ProviderRegistry.from_entry_points()
    problem = registry.availability("google", {})
    assert problem is not None and "GOOGLE_APPLICATION_CREDENTIALS" in problem
    with pytest.raises(ProviderUnavailable, match="GOOGLE_APPLICATION_CREDENTIALS"):
        registry.create("google", {})
    provider = GoogleProvider(parse_settings({}))  # built without the registry's check
    with pytest.raises(ProviderUnavailable, match="GOOGLE_APPLICATION_CREDENTIALS"):
        await provider.start()


@pytest.mark.usefixtures("no_adc")
def test_credentials_file_and_insecure_settings(tmp_path: Path) -> None:
    registry = ProviderRegistry.from_entry_points()
    missing = registry.availability("google", {"credentials_file": str(tmp_path / "nope.json")})
    assert missing is not None and "nope.json" in missing
    key = tmp_path / "key.json"
    key.write_text(json.dumps(_service_account_key()))
    assert registry.availability("google", {"credentials_file": str(key)}) is None
    assert registry.availability("google", {"endpoint": "127.0.0.1:1", "insecure": True}) is None
    assert "endpoint" in (registry.availability("google", {"insecure": True}) or "")
    provider = registry.create("google", {"endpoint": "127.0.0.1:1", "insecure": True, "streaming": False})
    assert provider.capabilities.streaming is False and provider.describe()["endpoint"] == "127.0.0.1:1"


def _service_account_key() -> dict[str, str]:
    """A syntactically valid service-account key (a fresh RSA key, no account behind it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "asrhub-test",
        "private_key_id": "0" * 40,
        "private_key": pem,
        "client_email": "asrhub@asrhub-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
