"""``server.loop``: the server runs on the loop it names — ``asrhub serve``, each worker of
``--workers 2`` and the in-process :class:`ServerThread` alike — and every listener works on
either: the aiohttp app (a WebSocket session), gRPC (``grpc.aio`` health check) and Wyoming
(``describe``). SIGTERM on either loop stops the server gracefully (exit 0). Where uvloop
cannot be imported, ``auto`` falls back to the standard loop and ``uvloop`` refuses to start
with a hint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info

from asrhub.commands import event_loop
from asrhub.settings.schema import EventLoop

from .conftest import AUTH, ROOT, ServerThread, free_port, make_settings

LOOPS: tuple[EventLoop, ...] = ("uvloop", "asyncio")


@pytest.fixture(scope="module", params=LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    server = {"loop": request.param, "grpc_port": free_port(), "wyoming_port": free_port()}
    with ServerThread(make_settings(provider="none", server=server)) as s:
        yield s


async def test_the_server_thread_runs_on_the_configured_loop_and_serves_every_listener(
    server: ServerThread,
) -> None:
    kind = server.call(lambda: event_loop.loop_name(asyncio.get_running_loop()))
    assert kind == server.settings.server.loop
    async with aiohttp.ClientSession(headers=AUTH) as http, http.ws_connect(server.ws) as ws:
        await ws.send_json({"type": "session.start", "config": {"provider": "none"}})
        assert (await ws.receive_json(timeout=30))["type"] == "session.started"
        await ws.send_json({"type": "ping", "id": 7})
        assert await ws.receive_json(timeout=30) == {"type": "pong", "id": 7}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.settings.server.grpc_port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    async with AsyncTcpClient("127.0.0.1", server.settings.server.wyoming_port) as client:
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), 30)
    assert event is not None and Info.is_type(event.type)


@pytest.mark.parametrize(("loop", "workers"), [("asyncio", 1), ("uvloop", 2)])
def test_asrhub_serve_and_its_workers_run_on_the_configured_loop(loop: EventLoop, workers: int) -> None:
    """The loop each server process reports is the one configured; SIGTERM stops it (exit 0).
    (A single process and the workers start the loop the same way: one of each is enough.)"""
    port = free_port()
    cmd = [sys.executable, "-m", "asrhub", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", str(workers), "--log-level", "info", "--log-format", "json"]
    env = {**os.environ, "ASRHUB_SERVER__LOOP": loop, "ASRHUB_DEFAULT_PROVIDER": "none"}
    with tempfile.TemporaryFile("w+") as logs:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=logs, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # ends at the process's exit if it never listens
                if line.startswith("asrhub: listening on"):
                    break
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=90) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        logs.seek(0)
        lines = [json.loads(line) for line in logs if line.startswith("{")]
    reported = [line["loop"] for line in lines if line.get("event") == "event loop"]
    assert reported == [loop] * workers, lines


def test_without_uvloop_auto_falls_back_and_uvloop_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # the fault: uvloop cannot be imported
    loop = event_loop.new_loop("auto")
    try:
        assert event_loop.loop_name(loop) == "asyncio"
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match=r"pip install 'asrhub\[uvloop\]'"):
        event_loop.loop_factory("uvloop")

    async def main() -> str:
        return event_loop.loop_name(asyncio.get_running_loop())

    assert event_loop.run(main(), "auto") == "asyncio"
    with pytest.raises(RuntimeError, match=r"pip install 'asrhub\[uvloop\]'"):
        event_loop.run(main(), "uvloop")  # the coroutine is closed, not left unawaited


def test_serve_with_uvloop_required_but_missing_is_a_configuration_error() -> None:
    code = "import sys; sys.modules['uvloop'] = None; from asrhub.cli import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, "serve", "--port", "0", "--workers", "2"]
    cmd += ["--set", "server.loop=uvloop"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done
    assert done.stderr.strip().splitlines()[-1] == f"asrhub: configuration error: {event_loop.UVLOOP_HINT}"
    assert "listening" not in done.stdout
