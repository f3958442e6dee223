"""Choosing a whisper model by the name the docs give it, in configuration, session and API alike
(issue 29, item 4): real ``asrhub serve`` processes on the installed tiny.en and base.

``[providers.whisper] model = "base"`` (and its environment form) used to stop the hub with "not
in the local Hugging Face cache" although base was installed: ``model`` was read as a source
only, the name was ``default_model``'s."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from asrhub.providers.whisper_model import base_model_dir, default_model_dir
from tests.audio_utils import fixture, fixture_entry, wer
from tests.serve_spawn import ROOT, spawn_serve

START_S = 180.0


@pytest.fixture(scope="module")
def base_hub() -> Iterator[str]:
    """A hub started the way docs/configuration.md says: ``ASRHUB_PROVIDERS__WHISPER__MODEL=base
    asrhub serve`` (the TOML form is the next test's)."""
    assert (base_model_dir() / "model.bin").is_file(), "run scripts/setup.sh: it installs base"
    env = {**os.environ, "ASRHUB_PROVIDERS__WHISPER__MODEL": "base", "HF_HUB_OFFLINE": "1"}
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as logs:
        proc, ready, reader = spawn_serve(0, [], env, logs, lines)
        try:
            while not ready.wait(0.2):
                if proc.poll() is not None:
                    logs.seek(0)
                    raise AssertionError(f"asrhub serve exited {proc.returncode}: {logs.read()[-3000:]}")
            url = next(m[1] for line in lines if (m := re.search(r"listening on (http://\S+)", line)))
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            reader.join(10)


async def test_model_named_in_the_configuration_is_the_default(base_hub: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_hub}/v1/models") as r:
            models = next(m for m in (await r.json())["data"] if m["id"] == "whisper")["info"]["models"]
        assert [name for name, m in models.items() if m["default"]] == ["base"]
        # a session naming no model gets base: German is transcribed (tiny.en would refuse it)
        form = aiohttp.FormData()
        form.add_field("file", fixture("german.wav").read_bytes(), filename="german.wav")
        async with http.post(f"{base_hub}/v1/transcribe", data=form) as r:
            body = await r.json()
            assert r.status == 200, body
        assert body["segments"][0]["language"] == "de"
        assert wer(fixture_entry("german.wav")["text"], body["text"]) <= 0.35
        # the same names choose the other model in a request
        form = aiohttp.FormData()
        form.add_field("file", fixture("quick_fox.wav").read_bytes(), filename="quick_fox.wav")
        form.add_field("model", "tiny.en")
        async with http.post(f"{base_hub}/v1/audio/transcriptions", data=form) as r:
            assert r.status == 200, await r.text()
            assert wer(fixture_entry("quick_fox.wav")["text"], (await r.json())["text"]) <= 0.1
        async with http.ws_connect(f"{base_hub}/v1/stream") as ws:
            await ws.send_json({"type": "session.start", "config": {"model": "tiny.en", "language": "de"}})
            refused = await ws.receive_json(timeout=30)
            assert refused["type"] == "error" and "tiny.en" in refused["message"], refused


def test_a_model_that_is_not_installed_stops_serve_naming_those_that_are(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('[providers.whisper]\nmodel = "small"\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run(
        [sys.executable, "-m", "asrhub", "serve", "--port", "0", "--config", str(config)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_S,
    )
    assert done.returncode == 1 and "listening" not in done.stdout, done.stdout
    message = done.stderr.strip()
    assert "model 'small' is not installed" in message and len(message.splitlines()) == 1, message
    assert f"tiny.en ({default_model_dir()})" in message and f"base ({base_model_dir()})" in message
    assert "model = NAME" in message and "download = true" in message
