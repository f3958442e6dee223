"""The ``openai`` provider against a third-party OpenAI-compatible server: faster-whisper-server
(PyPI, MIT; installed by scripts/setup.sh into .venv-compat, not into the project's lock),
serving the bundled tiny.en model files offline on 127.0.0.1. Nothing of it is ours: what it
answers is what a user's own server would answer."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from asrhub.providers.openai import OpenAIProvider
from asrhub.providers.whisper_model import default_model_dir
from tests.audio_utils import fixture, fixture_entry, load_wav, wer

from .conftest import finals, make_hub, run_session

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / ".venv-compat" / "bin" / "faster-whisper-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def third_party() -> Iterator[str]:
    assert SERVER.exists(), "run scripts/setup.sh (it installs faster-whisper-server into .venv-compat)"
    model = default_model_dir()
    assert model is not None and (model / "model.bin").exists()
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [str(SERVER), str(model), "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:  # its /health answers once the model is loaded
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"faster-whisper-server exited: {log.read()[-3000:]}")
                try:
                    with urllib.request.urlopen(base + "/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                assert time.monotonic() < deadline, "faster-whisper-server did not become healthy"
                time.sleep(0.2)
            yield base + "/v1"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def started(**options: object) -> OpenAIProvider:
    provider = OpenAIProvider({"api_key": "sk-unused", **options})
    await provider.start()
    return provider


async def test_transcribes_through_faster_whisper_server(third_party: str) -> None:
    provider = await started(base_url=third_party)
    try:
        for name in ("weather_question.wav", "address_time.wav"):
            samples, _ = load_wav(fixture(name))
            result = await provider.transcribe(samples, language="en")
            assert wer(fixture_entry(name)["text"], result.text) <= 0.1, (name, result.text)
    finally:
        await provider.close()


async def test_a_hub_session_served_by_faster_whisper_server(third_party: str) -> None:
    provider = await started(base_url=third_party)
    try:
        hub = make_hub({"openai": provider})
        samples, _ = load_wav(fixture("silences.wav"))
        got = finals(await run_session(hub, samples, {"provider": "openai"}))
        assert len(got) == 4 and {f.provider for f in got} == {"openai"}
        assert wer(fixture_entry("silences.wav")["text"], " ".join(f.text for f in got)) <= 0.1
    finally:
        await provider.close()
