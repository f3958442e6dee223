"""Tools for the reliability tests: raw clients that can misbehave, hub-side problem capture,
server probes (metrics, RSS) and the audio of the fixtures.

* :class:`RawWS` — a WebSocket client written against the socket, so a test can send half a
  frame, invalid UTF-8 or nothing at all, then reset the TCP connection (RST, no close frame).
* :class:`RawSocketIO` — the Engine.IO v4 / Socket.IO v5 wire protocol over :class:`RawWS`, for
  the same abuse on the Socket.io transport (the real ``python-socketio`` client is used too).
* :class:`Watch` — everything that could escape unhandled on the hub side: the server loop's
  exception handler, ``sys.unraisablehook``, ``threading.excepthook`` and every log line at
  error level or above (structlog and stdlib alike, through ``asrhub.logging``).
* :class:`ServeProcess` — ``asrhub serve`` as a subprocess: its logs, its RSS, its /metrics.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes
from tests.serve_spawn import spawn_serve

RATE = 16_000

# ------------------------------------------------------------------ audio


def pcm_of(name: str) -> bytes:
    samples, rate = load_wav(fixture(name))
    assert rate == RATE
    return pcm16_bytes(samples)


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)


def chunks(pcm: bytes, ms: int = 100) -> list[bytes]:
    size = RATE * 2 * ms // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def manifest_segments(name: str = "silences.wav") -> list[dict[str, Any]]:
    segments: list[dict[str, Any]] = fixture_entry(name)["segments"]
    return segments


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ raw WebSocket


class WSClosed(Exception):
    """The server closed the connection; ``code`` is its close code (None: no close frame)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"closed ({code})")
        self.code = code


class RawWS:
    """A minimal RFC 6455 client over a plain socket (client frames masked, as required)."""

    TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.close_code: int | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        path: str = "/v1/stream",
        *,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        within: float = 10.0,
        source: str | None = None,
    ) -> RawWS:
        """``source``: the local address to connect from (another loopback address, 127.0.0.2,
        is another client address as far as the hub can tell)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source is not None:
            sock.bind((source, 0))
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within):
            await loop.sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
            key = base64.b64encode(os.urandom(16)).decode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
            writer.write(
                (
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                    f"{extra}\r\n"
                ).encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            writer.close()
            raise ConnectionError(f"no WebSocket upgrade: {head[:80]!r}")
        return cls(reader, writer)

    @staticmethod
    def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        body = (np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)).tobytes()
        return head + mask + body

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_text(self, text: str | bytes) -> None:
        await self.send_raw(self.frame(self.TEXT, text.encode() if isinstance(text, str) else text))

    async def send_json(self, obj: Any) -> None:
        await self.send_text(json.dumps(obj))

    async def send_bytes(self, data: bytes) -> None:
        await self.send_raw(self.frame(self.BINARY, data))

    async def recv(self) -> tuple[int, bytes]:
        """The next data frame (pings are answered here). Raises :class:`WSClosed`."""
        while True:
            try:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack(">H", await self.reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(n)
            except (asyncio.IncompleteReadError, ConnectionError):
                raise WSClosed(self.close_code) from None
            opcode = b0 & 0x0F
            if opcode == self.PING:
                with contextlib.suppress(ConnectionError):
                    await self.send_raw(self.frame(self.PONG, payload))
                continue
            if opcode == self.PONG:
                continue
            if opcode == self.CLOSE:
                self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.send_raw(self.frame(self.CLOSE, payload[:2]))
                self.writer.close()
                raise WSClosed(self.close_code)
            return opcode, payload

    async def recv_json(self, within: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while True:
                opcode, payload = await self.recv()
                if opcode == self.TEXT:
                    result: dict[str, Any] = json.loads(payload)
                    return result

    async def events_until(
        self, stop: Callable[[dict[str, Any]], bool], within: float = 60.0
    ) -> list[dict[str, Any]]:
        """Every JSON message up to and including the first for which ``stop`` is true (or the
        close of the connection)."""
        out: list[dict[str, Any]] = []
        with contextlib.suppress(WSClosed):
            while True:
                event = await self.recv_json(within)
                out.append(event)
                if stop(event):
                    break
        return out

    async def close(self, code: int = 1000) -> None:
        """A clean close: close frame, wait for the server's, hang up."""
        with contextlib.suppress(WSClosed, TimeoutError, ConnectionError, RuntimeError):
            await self.send_raw(self.frame(self.CLOSE, struct.pack(">H", code)))
            async with asyncio.timeout(5):
                while True:
                    await self.recv()
        self.writer.close()

    def reset(self) -> None:
        """Vanish: RST the TCP connection, no close frame."""
        reset(self.writer)


def reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# ------------------------------------------------------------------ raw Socket.io


class RawSocketIO:
    """Engine.IO 4 + Socket.IO 5 over a raw WebSocket: ``emit`` JSON, ``emit_binary`` audio."""

    def __init__(self, ws: RawWS) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, port: int, auth: dict[str, Any] | None = None) -> RawSocketIO:
        ws = await RawWS.connect(port, "/socket.io/?EIO=4&transport=websocket")
        _opcode, payload = await ws.recv()
        assert payload.startswith(b"0{"), payload
        await ws.send_text("40" + (json.dumps(auth) if auth else ""))
        client = cls(ws)
        event = await client.recv_packet()
        assert event.startswith("40"), event
        return client

    async def recv_packet(self, within: float = 30.0) -> str:
        async with asyncio.timeout(within):
            while True:
                opcode, payload = await self.ws.recv()
                if opcode != RawWS.TEXT:
                    continue
                text = payload.decode()
                if text == "2":  # engine.io ping
                    await self.ws.send_text("3")
                    continue
                return text

    async def recv_event(self, within: float = 30.0) -> tuple[str, Any]:
        """The next ``(event, payload)``; raises :class:`WSClosed` on a Socket.io disconnect."""
        while True:
            text = await self.recv_packet(within)
            if text.startswith("42"):
                name, *args = json.loads(text[2:])
                return name, (args[0] if args else None)
            if text.startswith("41") or text.startswith("1"):
                raise WSClosed(None)

    async def emit(self, event: str, data: Any) -> None:
        await self.ws.send_text("42" + json.dumps([event, data]))

    async def emit_binary(self, event: str, data: bytes) -> None:
        await self.ws.send_text(f'451-["{event}",{{"_placeholder":true,"num":0}}]')
        await self.ws.send_bytes(data)

    def reset(self) -> None:
        self.ws.reset()


# ------------------------------------------------------------------ hub-side problems


class _Lines:
    """A text stream that keeps the JSON log lines written to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.lines.extend(line for line in text.splitlines() if line.strip())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class Watch:
    """Collects whatever escapes unhandled in this process while active (see module doc).

    ``allowed`` are substrings of error-level log lines that a test expects (a session that
    failed on purpose logs ``session failed``, say)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop
        self.problems: list[str] = []
        self.logs = _Lines()
        self._old_unraisable = sys.unraisablehook
        self._old_thread_hook = threading.excepthook

    def __enter__(self) -> Watch:
        from asrhub.logging import configure
        from asrhub.settings.schema import LogSettings

        configure(LogSettings(level="info", format="json"), stream=self.logs)  # type: ignore[arg-type]
        sys.unraisablehook = self._unraisable
        threading.excepthook = self._thread_exception
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.set_exception_handler, self._loop_exception)
        return self

    def __exit__(self, *_exc: object) -> None:
        from asrhub.logging import reset

        sys.unraisablehook = self._old_unraisable
        threading.excepthook = self._old_thread_hook
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.set_exception_handler, None)
        reset()

    def _unraisable(self, args: Any) -> None:
        self.problems.append(f"unraisable: {args.exc_type.__name__}: {args.exc_value!r} in {args.object!r}")

    def _thread_exception(self, args: Any) -> None:
        self.problems.append(f"thread {args.thread.name if args.thread else '?'}: {args.exc_value!r}")

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.problems.append(f"event loop: {context.get('message')}: {context.get('exception')!r}")

    def errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """Problems plus log lines at error level or above, minus the allowed ones."""
        return [*self.problems, *log_errors(list(self.logs.lines), allowed)]


def log_errors(lines: list[str], allowed: tuple[str, ...] = ()) -> list[str]:
    """Error-level JSON log lines (and non-JSON lines, e.g. a raw traceback) not ``allowed``."""
    found = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            found.append(line)
            continue
        if record.get("level") in ("error", "critical", "exception") or "exception" in record:
            if not any(a in line for a in allowed):
                found.append(line)
    return found


# ------------------------------------------------------------------ server probes


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {"name{labels}": value} (labels as written)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric_sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


async def eventually(check: Callable[[], Awaitable[bool]], within: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)


class ServeProcess:
    """``asrhub serve`` on a free port with JSON logs in a file; ``settings`` become --set flags."""

    def __init__(self, *settings: str, env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.args = [a for setting in settings for a in ("--set", setting)]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ASRHUB_")}
        self.env.update({"PYTHONUNBUFFERED": "1", **(env or {})})
        self.logfile = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> ServeProcess:
        args = ["--log-level", "info", *self.args]
        self.proc, ready, self._reader = spawn_serve(self.port, args, self.env, self.logfile)
        if not ready.wait(120):
            self.stop(signal.SIGKILL)
            raise AssertionError(f"asrhub serve did not start:\n{self.log_text()[-3000:]}")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop(signal.SIGKILL)
        self._reader.join(10)  # stdout ends with the process
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.logfile.close()
        with contextlib.suppress(OSError):
            os.unlink(self.logfile.name)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def log_text(self) -> str:
        return Path(self.logfile.name).read_text(errors="replace")

    def log_lines(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if line.strip()]

    def rss_mb(self) -> float:
        import psutil

        assert self.proc is not None
        return float(psutil.Process(self.proc.pid).memory_info().rss) / 1e6

    async def steady_rss_mb(self, within: float = 30.0) -> float:
        """The hub's RSS once it has stopped moving (three samples 0.25 s apart within 1 MB of
        each other). Right after the last session is gone, the engine threads are still giving
        back their working memory (up to ~100 MB for a few hundred ms, measured): one sample
        then measures that moment, not what the hub keeps."""
        deadline = time.monotonic() + within
        samples = [self.rss_mb()]
        while len(samples) < 3 or max(samples[-3:]) - min(samples[-3:]) > 1.0:
            if time.monotonic() > deadline:
                raise AssertionError(f"RSS still moving after {within} s: {samples[-6:]}")
            await asyncio.sleep(0.25)
            samples.append(self.rss_mb())
        return samples[-1]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    out: list[float] = []
    start = time.monotonic()
    try:
        yield out
    finally:
        out.append(time.monotonic() - start)
