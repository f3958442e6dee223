"""The ``funasr`` provider against FakeFunasrServer (tests/servers/fake_funasr_server.py).

No FunASR model can be installed here, so every test talks to the protocol-faithful fake:
FunASR's wire protocol and quirks, FSMN-VAD for the voice-activity timestamps, faster-whisper
``tiny.en`` for the text. The fake itself is cross-checked against the independent
``funasr-client`` package. No real FunASR server is contacted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from funasr_client import AsyncFunASRClient, async_file_asr_stream

from asrhub.config import Limits, SessionConfig, VadConfig
from asrhub.engine.registry import ProviderRegistry
from asrhub.frames import ErrorEvent, FinalTranscript, PartialTranscript
from asrhub.hub import Hub
from asrhub.plugin import ProviderError, ProviderUnavailable
from asrhub.providers.funasr import FunasrProvider, parse_settings
from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes, wer
from tests.providers.funasr_google_driver import (
    batch_mode_final,
    check_order,
    drive_stage,
    hub_session,
    updated_between_utterances,
)
from tests.servers.fake_funasr_server import FakeFunasrServer
from tests.servers.fsmn_vad import speech_segments

FOX = "quick_fox.wav"


@pytest.fixture
async def server() -> AsyncIterator[FakeFunasrServer]:
    fake = FakeFunasrServer()
    await fake.start()
    yield fake
    await fake.close()


async def provider_for(url: str, **settings: object) -> FunasrProvider:
    """A started provider. The final-result timeout is generous (the fake transcribes on a CPU
    that other test runs may share); the fault tests set a short one."""
    provider = FunasrProvider(parse_settings({"url": url, "timeout": 120.0, **settings}))
    await provider.start()
    return provider


# ---------------------------------------------------------------------- the fake, cross-checked


async def test_funasr_client_package_works_against_the_fake(server: FakeFunasrServer) -> None:
    """The independent funasr-client, unchanged: 2pass streaming ends with a final, corrected
    sentence that carries FunASR's timestamp formats."""
    messages = [m async for m in async_file_asr_stream(str(fixture(FOX)), server.url, mode="2pass")]
    assert messages[-1]["is_final"] is True
    assert {m["mode"] for m in messages} <= {"2pass-online", "2pass-offline"}
    corrected = [m for m in messages if m["mode"] == "2pass-offline"]
    assert wer(fixture_entry(FOX)["text"], " ".join(m["text"] for m in corrected)) <= 0.15
    sent = corrected[-1]["stamp_sents"][0]
    assert len(sent["text_seg"].split()) == len(sent["ts_list"]) == len(corrected[-1]["timestamp"])
    # The raw wire form of "timestamp" is a string, as FunASR's servers send it.
    raw = [m for m in server.sent if m["mode"] == "2pass-offline"][-1]
    assert isinstance(raw["timestamp"], str) and json.loads(raw["timestamp"]) == corrected[-1]["timestamp"]


async def test_offline_answer_is_flagged_not_final_like_funasr(server: FakeFunasrServer) -> None:
    """FunASR's offline server answers once per end of audio with ``is_final: false`` (so
    funasr-client, which waits for is_final, must be read with a timeout here)."""
    samples, _ = load_wav(fixture(FOX))
    client: AsyncFunASRClient = AsyncFunASRClient(server.url, mode="offline", blocking=True, audio_fs=16000)
    await client.connect()
    await client.send(pcm16_bytes(samples))
    await client.signal_close()
    message = await client.recv(timeout=60)
    await client._close_ws()
    assert message["mode"] == "offline" and message["is_final"] is False
    # The token times are the recogniser's, inside FSMN-VAD's speech region.
    (region,) = speech_segments(samples)
    stamps = message["timestamp"]
    assert region[0] <= stamps[0][0] and stamps[-1][1] <= region[1]
    assert wer(fixture_entry(FOX)["text"], message["text"]) <= 0.15


# ---------------------------------------------------------------------- batch (offline mode)


async def test_transcribe_sends_the_protocol_config_and_returns_words(server: FakeFunasrServer) -> None:
    provider = await provider_for(
        server.url, hotwords={"fox": 20}, itn=False, svs_lang="en", chunk_size=[8, 8, 4]
    )
    try:
        samples, _ = load_wav(fixture(FOX))
        result = await provider.transcribe(samples)
    finally:
        await provider.close()
    first = server.configs[0]
    assert first["mode"] == "offline" and first["is_speaking"] is True
    assert first["wav_format"] == "pcm" and first["audio_fs"] == 16000
    assert first["chunk_size"] == [8, 8, 4] and first["itn"] is False and first["svs_lang"] == "en"
    assert json.loads(first["hotwords"]) == {"fox": 20}  # FunASR wants a JSON *string*
    assert server.configs[-1] == {"is_speaking": False}
    assert wer(fixture_entry(FOX)["text"], result.text) <= 0.15
    assert result.words is not None and [w.word.lower() for w in result.words][:3] == [
        "the",
        "quick",
        "brown",
    ]
    assert all(0.0 <= w.start <= w.end <= result.duration for w in result.words)
    (sentence,) = result.segments  # stamp_sents: one per FSMN-VAD speech region
    assert sentence.start <= result.words[0].start and result.words[-1].end <= sentence.end
    assert wer(result.text, sentence.text) == 0.0


async def test_offline_mode_session_uses_the_batch_stage(server: FakeFunasrServer) -> None:
    provider = await provider_for(server.url, mode="offline")
    final = await batch_mode_final(provider, "funasr", "weather_question.wav")
    assert wer(fixture_entry("weather_question.wav")["text"], final.text) <= 0.2
    assert final.words and final.start <= final.words[0].start <= final.words[-1].end <= final.end + 0.05


# ---------------------------------------------------------------------- streaming (2pass, online)


async def test_2pass_session_end_to_end_partials_then_finals(server: FakeFunasrServer) -> None:
    """A hub session with the standard chain: the hub's VAD ends each utterance with
    is_speaking false; 2pass-online pieces become partials, 2pass-offline the final."""
    provider = await provider_for(server.url, mode="2pass")
    try:
        from asrhub.wiring import build_pipeline

        hub = Hub(providers={"funasr": provider}, pipeline_factory=build_pipeline, default_provider="funasr")
        events = await hub_session(hub, {"language": "en"}, FOX)
    finally:
        await provider.close()
    finals = check_order(events)
    assert len(finals) == 1 and isinstance(finals[0], FinalTranscript)
    final = finals[0]
    assert any(isinstance(e, PartialTranscript) and e.segment_id == final.segment_id for e in events)
    assert wer(fixture_entry(FOX)["text"], final.text) <= 0.15
    assert final.words and final.start <= final.words[0].start < final.words[-1].end <= final.end + 0.05
    assert server.connections == 1
    assert {"is_speaking": False} in server.configs and server.configs[0]["svs_lang"] == "en"


async def test_2pass_multi_utterance_stage_keeps_order(server: FakeFunasrServer) -> None:
    provider = await provider_for(server.url, mode="2pass", chunk_size=[5, 20, 5])
    try:
        frames = await drive_stage(provider, "silences.wav", pace_s=0.02, utterances=3)
    finally:
        await provider.close()
    finals = check_order(frames)
    entry = fixture_entry("silences.wav")
    assert [f.segment_id for f in finals] == [1, 2, 3]
    assert all(isinstance(f, FinalTranscript) and f.provider == "funasr" for f in finals)
    for final, segment in zip(finals, entry["segments"][:3], strict=True):
        assert isinstance(final, FinalTranscript)
        assert wer(segment["text"], final.text) <= 0.25
        assert final.words and segment["start"] - 0.3 <= final.words[0].start <= segment["end"]


async def test_online_mode_finals_are_the_joined_online_pieces(server: FakeFunasrServer) -> None:
    """online: the 2pass server labels results ``2pass-online``; the last has is_final true."""
    provider = await provider_for(server.url, mode="online")
    try:
        frames = await drive_stage(provider, FOX)
    finally:
        await provider.close()
    (final,) = check_order(frames)
    assert isinstance(final, FinalTranscript)
    assert {m["mode"] for m in server.sent} == {"2pass-online"} and server.sent[-1]["is_final"] is True
    assert any(isinstance(f, PartialTranscript) for f in frames)
    assert wer(fixture_entry(FOX)["text"], final.text) <= 0.25


async def test_wss_with_the_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = FakeFunasrServer(ssl_context=context)
    url = await fake.start()
    assert url.startswith("wss://")
    samples, _ = load_wav(fixture(FOX))
    verified = await provider_for(url)
    unverified = await provider_for(url, ssl_verify=False)
    try:
        with pytest.raises(ProviderError, match="certificate"):
            await verified.transcribe(samples)
        result = await unverified.transcribe(samples)
    finally:
        await verified.close()
        await unverified.close()
        await fake.close()
    assert wer(fixture_entry(FOX)["text"], result.text) <= 0.15


async def test_without_vad_utterances_are_fixed_windows(server: FakeFunasrServer) -> None:
    """No VAD: the stream is cut every ``limits.fixed_window_s`` (each window one utterance)."""
    provider = await provider_for(server.url, mode="2pass")
    config = SessionConfig(vad=VadConfig(enabled=False))
    try:
        frames = await drive_stage(
            provider, FOX, config=config, limits=Limits(fixed_window_s=2.0), vad_events=False, pace_s=0.0
        )
    finally:
        await provider.close()
    finals = check_order(frames, vad=False)
    assert [(f.segment_id, f.start) for f in finals] == [(1, 0.0), (2, 2.0)]
    assert all(isinstance(f, FinalTranscript) for f in finals)
    text = " ".join(f.text for f in finals if isinstance(f, FinalTranscript))
    assert wer(fixture_entry(FOX)["text"], text) <= 0.35  # one word may be cut at the window edge
    assert server.connections == 2


# ---------------------------------------------------------------------- failures and failover


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("drop", "closed the connection"),
        ("error", "code 1011: fake fault: decoder error"),
        ("hang", "no final"),
    ],
)
async def test_faults_become_provider_failed_and_the_session_lives(
    server: FakeFunasrServer, fault: str, expected: str
) -> None:
    server.fault, server.fault_after_bytes = fault, 16_000  # type: ignore[assignment]
    provider = await provider_for(server.url, mode="2pass", timeout=1.0)
    try:
        frames = await drive_stage(provider, FOX, pace_s=0.0)
    finally:
        await provider.close()
    (error,) = check_order(frames)
    assert isinstance(error, ErrorEvent) and error.code == "provider_failed" and not error.fatal
    assert error.segment_id == 1 and expected in error.message and error.message.startswith("funasr:")


async def test_unreachable_server_fails_fast_with_the_address() -> None:
    provider = await provider_for("ws://127.0.0.1:9", connect_timeout=2.0)
    samples, _ = load_wav(fixture(FOX))
    try:
        with pytest.raises(ProviderError, match=r"cannot connect to ws://127\.0\.0\.1:9"):
            await provider.transcribe(samples)
    finally:
        await provider.close()


async def test_failover_funasr_to_google_and_back(server: FakeFunasrServer) -> None:
    """FunASR as primary with Google as fallback, then Google as primary with FunASR as fallback
    (the Google side runs against the local google.cloud.speech.v1 server)."""
    from asrhub.providers.google import GoogleProvider
    from asrhub.providers.google import parse_settings as google_settings
    from tests.servers.google_speech_server import LocalSpeechServer

    speech = LocalSpeechServer()
    endpoint = await speech.start()
    google = GoogleProvider(google_settings({"endpoint": endpoint, "insecure": True, "timeout": 120.0}))
    await google.start()
    funasr = await provider_for(server.url, mode="2pass")
    try:
        server.fault, server.fault_after_bytes = "drop", 8_000
        frames = await drive_stage(funasr, "reminder.wav", (google,), pace_s=0.0)
        (final,) = check_order(frames)
        assert isinstance(final, FinalTranscript) and final.provider == "google"
        assert wer(fixture_entry("reminder.wav")["text"], final.text) <= 0.2

        server.fault = None
        speech.fault = _grpc_unavailable()
        frames = await drive_stage(google, "reminder.wav", (funasr,), pace_s=0.0)
        (final,) = check_order(frames)
        assert isinstance(final, FinalTranscript) and final.provider == "funasr"
        assert wer(fixture_entry("reminder.wav")["text"], final.text) <= 0.2
    finally:
        await funasr.close()
        await google.close()
        await speech.close()


# ---------------------------------------------------------------------- settings and registry


def test_registry_lists_funasr_with_its_availability() -> None:
    registry = ProviderRegistry.from_entry_points()
    assert "funasr" in registry.names()
    assert registry.availability("funasr", {"url": "wss://asr.example:10095", "ssl_verify": False}) is None
    problem = registry.availability("funasr", {"url": "http://asr.example"})
    assert problem is not None and "ws://" in problem
    assert "mode" in (registry.availability("funasr", {"mode": "fast"}) or "")
    with pytest.raises(ProviderUnavailable):
        registry.create("funasr", {"chunk_size": [5, 0, 5]})
    provider = registry.create("funasr", {"mode": "offline"})
    assert provider.capabilities.streaming is False and provider.describe()["mode"] == "offline"


def test_asrhub_providers_lists_both_with_availability(tmp_path: Path) -> None:
    """The CLI, as a user runs it, on a machine without Google credentials."""
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "NO_GCE_CHECK": "True",
    }
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    command = [
        sys.executable,
        "-m",
        "asrhub",
        "providers",
        "--json",
        "--no-probe",  # reaching the engines: tests/providers/test_providers_status.py
        "--set",
        "providers.funasr.mode=offline",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=True)
    rows = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["funasr"]["status"] == "configured, not checked"
    assert rows["funasr"]["capabilities"]["streaming"] is False
    assert rows["google"]["available"] is False
    assert "GOOGLE_APPLICATION_CREDENTIALS" in rows["google"]["problem"]
    done = subprocess.run(
        [
            *command,
            "--set",
            "providers.google.endpoint=127.0.0.1:1",
            "--set",
            "providers.google.insecure=true",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["google"]["status"] == "configured, not checked"  # credentials no longer missing
    assert rows["google"]["capabilities"]["partials"] is True


def _grpc_unavailable() -> object:
    import grpc

    return grpc.StatusCode.UNAVAILABLE


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate like the one FunASR's servers ship (not trusted by anyone)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "funasr-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.crt", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_session_update_holds_for_the_next_utterances_streams(server: FakeFunasrServer) -> None:
    """A ``session.update`` between utterances: the streams that follow send the new key terms
    as hot words and the new language; the one before kept the start config."""
    provider = await provider_for(server.url, mode="2pass")
    try:
        events = await updated_between_utterances(provider, "funasr", "en", "de")
    finally:
        await provider.close()
    configs = [c for c in server.configs if "mode" in c]
    assert len(configs) == len(check_order(events)), configs
    assert "hotwords" not in configs[0] and configs[0].get("svs_lang") == "en"
    for later in configs[1:]:
        assert "Zorblax" in later["hotwords"] and later.get("svs_lang") == "de", later
