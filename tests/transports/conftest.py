"""Real hub servers on 127.0.0.1 for the transport tests.

:class:`ServerThread` runs the real application (``create_app`` over a hub from
``build_hub``) on its own event loop in a background thread, on a free port, so every test
keeps its own client loop and one server (and one loaded model) serves a whole module or the
whole session. :func:`serve_process` runs ``asrhub serve`` as a subprocess, for signals and
process memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import pytest
from aiohttp import web

from asrhub.commands.event_loop import new_loop
from asrhub.config import Limits
from asrhub.hub import Hub
from asrhub.settings.schema import EventLoop, ServerSettings, Settings
from asrhub.transports.app import create_app
from asrhub.transports.common import listening_sockets
from asrhub.transports.door import DOOR
from asrhub.transports.tcp_gate import GatedSite
from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes

if TYPE_CHECKING:
    import openai

T = TypeVar("T")

KEY = "test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
OTHER_KEY = "test-key-2"
ROOT = Path(__file__).resolve().parents[2]


def make_settings(*, provider: str = "whisper", keys: tuple[str, ...] = (KEY,), **sections: Any) -> Settings:
    """Settings for a test server: free port, ``keys``, and ``server``/``limits`` overrides.
    ``ASRHUB_SERVER__LOOP`` in the environment picks the event loop, as it does for
    ``asrhub serve`` (``ASRHUB_SERVER__LOOP=asyncio pytest tests/transports``)."""
    loop = msgspec.convert(os.environ.get("ASRHUB_SERVER__LOOP", ServerSettings().loop), EventLoop)
    server = ServerSettings(port=0, api_keys=keys, loop=loop)
    server = msgspec.structs.replace(server, **sections.pop("server", {}))
    limits = msgspec.structs.replace(Limits(), **sections.pop("limits", {}))
    return Settings(default_provider=provider, server=server, limits=limits, **sections)


class ServerThread:
    """A hub application served from a background thread, on its own loop of the kind
    ``settings.server.loop`` names (as ``asrhub serve`` runs)."""

    def __init__(self, settings: Settings, hub_factory: Callable[[Settings], Hub] | None = None) -> None:
        self.settings = settings
        self._hub_factory = hub_factory
        self.loop = new_loop(settings.server.loop)
        self._thread = threading.Thread(target=self.loop.run_forever, name="hub-server", daemon=True)
        self.port = 0
        self.hub: Hub
        self.app: web.Application
        self._runner: web.AppRunner

    def __enter__(self) -> ServerThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=120)
        return self

    async def _start(self) -> None:
        if self._hub_factory is None:
            from asrhub.wiring import build_hub

            self.hub = build_hub(self.settings)
        else:
            self.hub = self._hub_factory(self.settings)
        self.app = create_app(self.hub, self.settings)
        self._runner = web.AppRunner(self.app, shutdown_timeout=15.0)
        await self._runner.setup()
        receive_buffer = self.settings.server.receive_buffer_bytes
        (sock,) = listening_sockets("127.0.0.1", 0, receive_buffer=receive_buffer)
        await GatedSite(self._runner, sock, self.app[DOOR]).start()
        self.port = self._runner.addresses[0][1]

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()  # else its self-pipe is an unclosed-socket warning at the next gc

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (to read its state) and return the result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def open_sessions(self) -> int:
        return self.call(lambda: len(self.hub.sessions))

    async def no_sessions(self, within: float = 30.0) -> bool:
        """Wait until the hub has no open session (a disconnect is handled a moment after the
        client's close returns); False if one is still open after ``within`` seconds — a
        leak, not a slow machine."""
        deadline = time.monotonic() + within
        while await asyncio.to_thread(self.open_sessions) != 0:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True


@pytest.fixture(scope="session")
def whisper_server() -> Iterator[ServerThread]:
    """The real default engine (faster-whisper tiny.en) behind every transport, keys required."""
    with ServerThread(make_settings()) as server:
        yield server


@pytest.fixture
def sdk(whisper_server: ServerThread) -> Iterator[openai.OpenAI]:
    """The official ``openai`` SDK (sync client) on whisper_server's OpenAI-compatible API."""
    import openai

    with openai.OpenAI(
        base_url=f"{whisper_server.http}/v1", api_key=KEY, max_retries=0, timeout=120
    ) as client:
        yield client


# ------------------------------------------------------------------ audio


def speech(name: str) -> tuple[bytes, str]:
    """(16 kHz mono PCM16 bytes, reference text) of a fixture."""
    samples, rate = load_wav(fixture(name))
    assert rate == 16_000
    return pcm16_bytes(samples), fixture_entry(name)["text"]


def frames(pcm: bytes, ms: int = 100, rate: int = 16_000) -> list[bytes]:
    size = rate * 2 * ms // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def finals_text(events: list[dict[str, Any]]) -> str:
    return " ".join(e["text"].strip() for e in events if e["type"] == "transcript.final").strip()


# ------------------------------------------------------------------ subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120.0
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``asrhub serve`` on a free port; yields (process, port) once it listens. Its stderr (the
    logs) goes to a file, so a chatty server never blocks on a full pipe."""
    port = free_port()
    cmd = [sys.executable, "-m", "asrhub", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with tempfile.TemporaryFile("w+") as logs:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=logs, text=True)
        try:
            line = _read_line_until(proc, "asrhub: listening on", timeout)
            if line is None:
                logs.seek(0)
                raise AssertionError(f"asrhub serve did not start: {logs.read()[-3000:]}")
            yield proc, port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


def _read_line_until(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str | None:
    result: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(prefix):
                result.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else None


def dumps(obj: Any) -> str:
    return json.dumps(obj)
