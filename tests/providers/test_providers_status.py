"""``asrhub providers`` tells the truth about remote engines (issue 29, item 6): a FunASR server,
an OpenAI-compatible server and a Google Speech endpoint are ``available`` only when they answer
now; configured but silent, they are ``unreachable`` with the address; with ``--no-probe``,
``configured, not checked``. It used to say ``funasr available`` while nothing listened.

Real servers on 127.0.0.1: the protocol-faithful FunASR server, the local Google Speech v1 gRPC
server, and an ASR Hub's own OpenAI-compatible endpoint; the CLI runs as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from asrhub.settings.schema import Settings
from asrhub.transports.app import create_app
from asrhub.wiring import build_hub
from tests.servers.fake_funasr_server import FakeFunasrServer
from tests.servers.google_speech_server import LocalSpeechServer

ROOT = Path(__file__).resolve().parents[2]
REMOTE = ("funasr", "google", "openai")


@pytest.fixture
async def hub_url() -> AsyncIterator[str]:
    """An ASR Hub (no engine) whose OpenAI-compatible endpoint is the server to reach."""
    settings = Settings(default_provider="none")
    runner = web.AppRunner(create_app(build_hub(settings), settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/v1"
    await runner.cleanup()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def providers(tmp_path: Path, *args: str) -> tuple[dict[str, dict[str, Any]], float]:
    """``asrhub providers --json ARGS`` (no Google credentials on the machine) → rows by name,
    and how long it took."""
    env = {**os.environ, "HOME": str(tmp_path), "CLOUDSDK_CONFIG": str(tmp_path / "gc")}
    env["NO_GCE_CHECK"] = "True"
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    env.pop("OPENAI_API_KEY", None)
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asrhub",
        "providers",
        "--json",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert err.decode() == ""  # warnings and up only: nothing here
    return {r["name"]: r for r in map(json.loads, out.decode().splitlines())}, time.monotonic() - started


def at(funasr: str, google: str, openai: str) -> list[str]:
    return [
        *("--set", f"providers.funasr.url={funasr}"),
        *("--set", f"providers.google.endpoint={google}", "--set", "providers.google.insecure=true"),
        *("--set", f"providers.openai.base_url={openai}"),
    ]


async def test_remote_engines_are_available_only_when_they_answer(tmp_path: Path, hub_url: str) -> None:
    funasr, google = FakeFunasrServer(), LocalSpeechServer()
    await funasr.start()
    await google.start()
    try:
        rows, _ = await providers(tmp_path, *at(funasr.url, google.endpoint, hub_url))
    finally:
        await funasr.close()
        await google.close()
    for name in REMOTE:
        assert rows[name]["status"] == "available" and rows[name]["available"] is True, rows[name]
        assert rows[name]["problem"] is None
    assert rows["whisper"]["status"] == "available"  # an engine of this process: its check says all

    port = closed_port()
    silent = at(f"ws://127.0.0.1:{port}", f"127.0.0.1:{port}", f"http://127.0.0.1:{port}/v1")
    rows, took = await providers(tmp_path, *silent, "--probe-timeout", "1.5")
    for name in REMOTE:
        assert rows[name]["status"] == "unreachable" and rows[name]["available"] is False, rows[name]
        assert f"127.0.0.1:{port}" in rows[name]["problem"], rows[name]
    assert took < 60  # probed at once, each bounded (the process start dominates)

    rows, _ = await providers(tmp_path, *silent, "--no-probe")
    for name in REMOTE:
        assert rows[name]["status"] == "configured, not checked" and rows[name]["available"] is None
    assert rows["whisper"]["available"] is True
