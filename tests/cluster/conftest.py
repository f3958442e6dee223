"""Real cluster parts on 127.0.0.1, started and stopped by the tests: ``redis-server`` (Debian's,
from scripts/setup.sh), ``asrhub serve`` nodes (subprocesses) and ``haproxy`` with
``deploy/haproxy.cfg`` — the very file the deploy docs ship (see docs/cluster.md).

Every part gets a free loopback port; every wait polls a condition against a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.serve_spawn import spawn_serve

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy.cfg"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


async def until(check: Callable[[], Awaitable[T | None]], limit_s: float, what: str, every: float = 0.1) -> T:
    """Poll an async check until it returns something truthy (returned), or fail at the deadline."""
    deadline = time.monotonic() + limit_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(every)


async def eventually(predicate: Callable[[], bool], limit_s: float, what: str, every: float = 0.05) -> None:
    """Poll a plain predicate from async code until it holds, or fail at the deadline."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(every)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Redis:
    """A throw-away ``redis-server`` (no persistence) on a free port; stop/start keep the port.
    ``users``: ACL users (password ``pw``, every key, channel and command) created at every
    start, so a test can act on one node's connections (``CLIENT KILL USER``, ``ACL SETUSER``)."""

    def __init__(self, users: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.users = users

    def url_of(self, user: str) -> str:
        return f"redis://{user}:pw@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        cmd = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        for user in self.users:
            cmd += ["--user", user, "on", ">pw", "~*", "&*", "+@all"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _listening(self.port), 20, "redis-server to listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


def _event_text(line: str) -> str:
    """A log line's message without its timestamp (JSON lines), or the line itself."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    return str(record.get("event")) if isinstance(record, dict) else line


class Node:
    """``asrhub serve`` as a subprocess on its own free port; stderr to a file."""

    def __init__(self, name: str, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.port = free_port()
        self.env = env
        self.args = args
        self.proc: subprocess.Popen[str] | None = None
        self.logs = tempfile.NamedTemporaryFile("w+", prefix=f"asrhub-{name}-", suffix=".log", delete=False)
        self.ready = threading.Event()
        self.lines: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """(Re)start it on the same port; its stdout is closed at EOF, so a restart leaves
        nothing open."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc, self.ready, _ = spawn_serve(self.port, self.args, env, self.logs, self.lines)

    def wait_ready(self, timeout: float = 180.0) -> None:
        if not self.ready.wait(timeout):
            raise AssertionError(f"node {self.name} did not start: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        """The end of its log, a run of identical lines said once with its count (a flood of
        one message must not push out what came before it)."""
        lines: list[str] = []
        repeats = 0
        for line in Path(self.logs.name).read_text().splitlines():
            event = _event_text(line)
            if lines and event == _event_text(lines[-1]):
                repeats += 1
                continue
            if repeats:
                lines[-1] += f"  (and {repeats} more like it)"
            lines.append(line)
            repeats = 0
        if repeats:
            lines[-1] += f"  (and {repeats} more like it)"
        return "\n".join(lines)[-chars:]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        self.kill()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.logs.close()
        with contextlib.suppress(OSError):
            os.unlink(self.logs.name)


class HAProxy:
    """``haproxy -f deploy/haproxy.cfg`` with the addresses in the environment variables the file
    reads (``ASRHUB_LB_BIND``, ``ASRHUB_NODE1..N`` for its N nodes, ``ASRHUB_LB_STATS``)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.port = free_port()
        self.stats_port = free_port()
        self.nodes = nodes
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs = tempfile.TemporaryFile("w+b")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        env = {
            **os.environ,
            "ASRHUB_LB_BIND": f"127.0.0.1:{self.port}",
            "ASRHUB_LB_STATS": f"127.0.0.1:{self.stats_port}",
            # health checks every 500 ms in the tests (deploy default: 2 s)
            "ASRHUB_LB_CHECK_INTER": "500ms",
        }
        for i, node in enumerate(self.nodes, 1):
            env[f"ASRHUB_NODE{i}"] = f"127.0.0.1:{node.port}"
        self.proc = subprocess.Popen(
            [exe, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=self.logs, stderr=self.logs
        )
        wait_for(lambda: _listening(self.port) or self.proc.poll() is not None, 20, "haproxy to listen")
        if self.proc.poll() is not None:
            self.logs.seek(0)
            raise AssertionError(f"haproxy did not start: {self.logs.read().decode()[-2000:]}")

    def servers_up(self) -> dict[str, bool]:
        """Backend ``hubs`` server states from the stats CSV."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2) as r:
            rows = r.read().decode().splitlines()
        header = rows[0].lstrip("# ").split(",")
        out = {}
        for row in rows[1:]:
            cols = dict(zip(header, row.split(","), strict=False))
            if cols.get("pxname") == "hubs" and cols.get("svname") not in ("FRONTEND", "BACKEND"):
                out[cols["svname"]] = cols.get("status", "").startswith("UP")
        return out

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.logs.close()


async def healthz(http: aiohttp.ClientSession, base: str) -> dict[str, Any] | None:
    try:
        async with http.get(f"{base}/healthz", timeout=aiohttp.ClientTimeout(total=3)) as r:
            return dict(json.loads(await r.text()))
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    if not (shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server")):
        pytest.fail("redis-server is not installed: run bash scripts/setup.sh")
    server = Redis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def start_nodes(nodes: list[Node]) -> None:
    """Start every node at once (each loads its models in parallel), then wait for all."""
    for node in nodes:
        node.start()
    for node in nodes:
        node.wait_ready()
