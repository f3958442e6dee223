"""FakeLink: a TCP relay between Chromium and a real hub that injects network faults.

Everything (the page, the WebSocket, Socket.io) goes through it unchanged until a test asks for
a fault:

* :meth:`FakeLink.drop` — the network dies: every relayed connection is reset (RST, no close
  frame) on both sides, as a lost Wi-Fi link or a NAT timeout would. The hub sees a dropped
  connection (a resumable session is detached); the browser sees close code 1006.
* :meth:`FakeLink.hold_http` / :meth:`FakeLink.release_http` — a congested path: the hub's
  answers on plain HTTP connections (not WebSockets) stop reaching the browser until released,
  so an HTTP+SSE page's audio POSTs stay in flight and its send backlog grows.
* :meth:`FakeLink.cut_slow_consumer` — what the hub does to a client that does not read its
  results: on each WebSocket relayed at that moment the browser gets, at a frame boundary, the
  hub's own ``error`` ``slow_consumer`` (fatal) and a close frame 1008 ``slow_consumer``, and the
  hub gets a client close frame (its session closes, as a slow consumer's does). A browser tab
  cannot be made to stop reading its socket from a test, and a hub's outbound buffers take
  minutes of results to fill, so the fault is injected here; the hub side of it is tested with
  a real stalled client in tests/transports/test_backpressure.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
import threading
from dataclasses import dataclass, field

from tests.reliability.harness import reset  # a TCP reset (RST), no goodbye


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked server → client WebSocket frame."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 1 << 16:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


def client_close_frame(code: int = 1000) -> bytes:
    """A masked client → server close frame."""
    payload = struct.pack("!H", code)
    mask = os.urandom(4)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def frame_size(buf: bytes | bytearray) -> int | None:
    """Length of the complete unmasked frame at the start of ``buf``, or None if incomplete."""
    if len(buf) < 2:
        return None
    n, at = buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None
        n, at = int.from_bytes(buf[2:4], "big"), 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n, at = int.from_bytes(buf[2:10], "big"), 10
    return at + n if len(buf) >= at + n else None


@dataclass(eq=False)
class Pair:
    client: asyncio.StreamWriter
    hub: asyncio.StreamWriter
    websocket: bool = False
    cut: asyncio.Event = field(default_factory=asyncio.Event)


class FakeLink:
    def __init__(self, hub_port: int) -> None:
        self.hub_port = hub_port
        self.pairs: set[Pair] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.drops = 0
        self.holding: asyncio.Event | None = None  # set: plain-HTTP answers flow
        self.cuts = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._relay, "127.0.0.1", 0)

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self._relay_pair(client_r, client_w)
        finally:
            self.tasks.discard(task)

    async def _relay_pair(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            hub_r, hub_w = await asyncio.open_connection("127.0.0.1", self.hub_port)
        except OSError:
            reset(client_w)
            client_w.close()
            return
        pair = Pair(client=client_w, hub=hub_w)
        self.pairs.add(pair)
        try:
            await asyncio.gather(self._upstream(client_r, pair), self._downstream(hub_r, pair))
        finally:
            self.pairs.discard(pair)
            for w in (client_w, hub_w):
                w.close()

    async def _upstream(self, reader: asyncio.StreamReader, pair: Pair) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if pair.cut.is_set():
                    return
                pair.hub.write(data)
                await pair.hub.drain()
        if not pair.cut.is_set():
            with contextlib.suppress(OSError):
                pair.hub.write_eof()

    async def _downstream(self, reader: asyncio.StreamReader, pair: Pair) -> None:
        """Relays hub → browser; after a 101 response, whole WebSocket frames only, so a fault
        can be injected between two frames."""
        head = bytearray()  # the first response's head decides: a 101 is a WebSocket
        raw = False
        buf = bytearray()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if pair.cut.is_set():
                    return
                if raw:
                    gate = self.holding
                    if gate is not None:
                        await gate.wait()
                    pair.client.write(data)
                elif not pair.websocket:
                    head += data
                    end = head.find(b"\r\n\r\n")
                    if end < 0 and len(head) < 16384:
                        continue
                    if not head.startswith(b"HTTP/1.1 101"):
                        raw = True
                        pair.client.write(bytes(head))
                    else:
                        pair.websocket = True
                        pair.client.write(bytes(head[: end + 4]))
                        buf += head[end + 4 :]
                    head.clear()
                else:
                    buf += data
                while pair.websocket and (size := frame_size(buf)) is not None:
                    pair.client.write(bytes(buf[:size]))
                    del buf[:size]
                await pair.client.drain()
        if not pair.cut.is_set():
            with contextlib.suppress(OSError):
                pair.client.write_eof()

    def _call(self, fn) -> int:  # type: ignore[no-untyped-def]
        async def run() -> int:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def hold_http(self) -> None:
        def go() -> int:
            self.holding = asyncio.Event()
            return 0

        self._call(go)

    def release_http(self) -> None:
        def go() -> int:
            gate, self.holding = self.holding, None
            if gate is not None:
                gate.set()
            return 0

        self._call(go)

    def drop(self) -> int:
        """Reset every relayed connection; returns how many there were."""

        def go() -> int:
            pairs = list(self.pairs)
            for pair in pairs:
                pair.cut.set()
                reset(pair.client)
                reset(pair.hub)
            self.drops += len(pairs)
            return len(pairs)

        return self._call(go)

    def cut_slow_consumer(self) -> int:
        """The hub's slow_consumer close on every relayed WebSocket; returns how many."""
        error = {
            "type": "error",
            "code": "slow_consumer",
            "message": "the client does not read its results fast enough",
            "fatal": True,
        }

        def go() -> int:
            cut = [p for p in self.pairs if p.websocket]
            for pair in cut:
                pair.cut.set()
                pair.client.write(server_frame(0x1, json.dumps(error).encode()))
                pair.client.write(server_frame(0x8, struct.pack("!H", 1008) + b"slow_consumer"))
                pair.hub.write(client_close_frame(1000))
                for w in (pair.client, pair.hub):
                    with contextlib.suppress(OSError):
                        w.write_eof()
            self.cuts += len(cut)
            return len(cut)

        return self._call(go)

    def close(self) -> None:
        async def go() -> None:
            self.server.close()
            for pair in list(self.pairs):
                reset(pair.client)
                reset(pair.hub)
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
