"""A rolling restart under load, for ``test_cluster.py``: SIGTERM of the node that runs live
resumable sessions over every client the hub has — ``asrhub.client`` (WebSocket), a
python-socketio client, the ``asrhub stream`` command and the browser UI (headless Chromium
with a fixture as its microphone, tests/e2e's harness) — all through HAProxy.

The CLI cannot choose its node (no cookie), so it starts first and the node the balancer gave
it is the one the others are pinned to (HAProxy's ``ASRHUB_NODE`` cookie) and the one that gets
the SIGTERM once every session is in its second utterance. Nothing here waits on a fixed sleep:
progress is read from the events themselves, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from asrhub.client import AudioLedger, chunks, read_audio_file, stream
from asrhub.frames import Event, FinalTranscript, SessionResumed, SpeechStarted
from tests.audio_utils import fixture

from .conftest import Node, eventually, healthz, until

FILE = "silences.wav"
"""What every client streams (4 utterances between long silences, 23.7 s)."""
SESSIONS = 10
PACE = 2.0
"""The clients' audio goes at twice real time; the CLI's at real time (``--realtime``)."""


@dataclass
class Handover:
    """What one SIGTERM under load came to."""

    node: Node
    """The node that was SIGTERMed."""
    clients: list[list[Event]]
    """The events of each ``asrhub.client`` session (WebSocket)."""
    socketio: list[dict[str, Any]]
    """Every message the Socket.io client received, in order."""
    cli: tuple[int, list[dict[str, Any]], str]
    """``asrhub stream --json``: exit status, its events, its stderr."""
    mid_utterance: int
    """Client sessions whose second utterance had no final yet when the SIGTERM came."""
    resumed_after_s: dict[str, float] = field(default_factory=dict)
    """SIGTERM → ``session.resumed`` on the new node, per client."""
    exit_after_s: float = 0.0
    exit_code: int | None = None
    notes: list[str] = field(default_factory=list)
    """The Socket.io client's connection history, and the drained node's last log lines."""
    browser: dict[str, Any] = field(default_factory=dict)
    """The page's session across the hand-over (see :class:`Browser`)."""
    cli_at_sigterm_s: float = 0.0
    """How far into its file (of 23.7 s) the CLI was when the SIGTERM came."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds from the start of the scenario to each of its steps."""


class SocketIoResumer:
    """A resumable session over Socket.io with python-socketio, as a client must write it:
    an :class:`~asrhub.client.AudioLedger` of the audio no final confirmed, ``session.resume``
    on a new connection after a drop or a ``session.handover``, the ledger re-sent from
    ``resume_from_bytes``."""

    def __init__(self, url: str, http: aiohttp.ClientSession, config: dict[str, Any]) -> None:
        self.url = url
        self.http = http
        self.config = config
        self.ledger = AudioLedger(config["audio"])
        self.got: list[dict[str, Any]] = []
        self.token: str | None = None
        self.last: int | None = None
        self.live = asyncio.Event()
        self.closed = asyncio.Event()
        self.lock = asyncio.Lock()
        self.sio: socketio.AsyncClient | None = None
        self.clients: list[socketio.AsyncClient] = []
        self.source_done = False
        self.sent_end = False
        self.on_resumed: Callable[[], None] = lambda: None
        self.notes: list[str] = []
        """What happened to the connections (for a failing test's message)."""

    async def _connect(self, opening: dict[str, Any]) -> dict[str, Any]:
        sio = socketio.AsyncClient(reconnection=False, http_session=self.http)
        self.clients.append(sio)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        @sio.on("*")
        async def on_any(event: str, data: Any) -> None:
            message = data if isinstance(data, dict) else {"type": event}
            self.got.append(message)
            kind = message.get("type")
            if kind in ("session.started", "session.resumed", "error") and not answer.done():
                answer.set_result(message)
            if kind == "session.started":
                self.token = message["resume_token"]
            elif kind == "transcript.final":
                self.last = max(self.last or 0, message["segment_id"])
                self.ledger.confirm_until(message["end"])
            elif kind == "session.handover":
                self.live.clear()  # the hub reads no more here; the ledger keeps the audio
            elif kind == "session.closed":
                self.closed.set()

        async def on_disconnect(*args: Any) -> None:
            self.notes.append(f"{time.monotonic():.2f} disconnect {args}")
            if not answer.done():
                answer.set_exception(ConnectionError("disconnected before the session answered"))

        sio.on("disconnect", on_disconnect)
        try:
            await sio.connect(self.url, transports=["websocket"], socketio_path="socket.io", wait_timeout=10)
            await sio.emit(opening["type"], opening)
            first = await asyncio.wait_for(answer, 30)
            if first["type"] == "error":
                raise ConnectionError(f"{first['code']}: {first['message']}")
        except BaseException as exc:
            self.notes.append(f"{time.monotonic():.2f} {opening['type']} failed: {exc!r}")
            with contextlib.suppress(Exception):
                await sio.disconnect()
            raise
        self.sio = sio
        return first

    async def _send(self, frame: bytes) -> None:
        try:
            assert self.sio is not None
            await self.sio.emit("audio", frame)
        except socketio.exceptions.SocketIOError:
            self.live.clear()

    async def _pump(self, source: Any) -> None:
        async for frame in source:
            async with self.lock:
                self.ledger.append(frame)
                if self.live.is_set():
                    await self._send(frame)
        self.source_done = True
        async with self.lock:
            if self.live.is_set():
                await self._end()

    async def _end(self) -> None:
        """session.end on the current connection (remembered: a later refused resume means
        the session ended)."""
        if self.sio is not None:
            await self.sio.emit("session.end", {"type": "session.end"})
            self.sent_end = True

    async def _resume(self, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while True:
            try:
                async with self.lock:
                    opening = {
                        "type": "session.resume",
                        "token": self.token,
                        "last_segment_id": self.last,
                        "audio_from_bytes": self.ledger.base,
                    }
                    resumed = await self._connect(opening)
                    self.on_resumed()
                    rest = self.ledger.since(resumed["resume_from_bytes"])
                    for offset in range(0, len(rest), 6400):
                        await self._send(rest[offset : offset + 6400])
                    if self.source_done:
                        await self._end()
                    self.live.set()
                    return
            except (ConnectionError, TimeoutError, socketio.exceptions.SocketIOError) as exc:
                if self.source_done and self.sent_end and "resume_failed" in str(exc):
                    # the connection dropped after session.end, before session.closed reached
                    # the client: the session ended and let its token go. Whether every word
                    # arrived is what the test checks next.
                    self.notes.append(f"{time.monotonic():.2f} ended before its close was read")
                    self.closed.set()
                    return
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def run(self, source: Any) -> list[dict[str, Any]]:
        await self._connect({"type": "session.start", "config": self.config, "resume": True})
        self.live.set()
        pump = asyncio.create_task(self._pump(source))
        try:
            while True:
                assert self.sio is not None
                await self.sio.wait()  # returns when the connection is gone
                if self.closed.is_set():
                    break
                self.live.clear()
                await self._resume(30.0)
                if self.closed.is_set():
                    break
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            for sio in self.clients:
                await sio.disconnect()
                # A close from the server that came before its DISCONNECT packet ends the
                # client's read loop without closing its WebSocket: close it here.
                ws = getattr(sio.eio, "ws", None)
                if ws is not None and not ws.closed:
                    await ws.close()
        return self.got


class Browser:
    """The browser UI (web/) in headless Chromium, its microphone a fixture sentence looped
    (tests/e2e's harness), on the node to drain: HAProxy's cookie, set in the browser, pins
    its WebSocket there. Selenium is synchronous: every call runs on a thread."""

    def __init__(self, lb_url: str, workdir: Path) -> None:
        self.lb_url, self.workdir = lb_url, workdir
        self.driver: Any = None
        self.text = ""

    def launch(self) -> None:
        """Chromium with the page loaded (the slow part: it overlaps the CLI's start)."""
        from tests.e2e.test_browser import _pad_wav, _pick_fixture, launch_chromium, open_page

        picked = _pick_fixture()
        assert picked is not None
        src, self.text = picked
        mic = self.workdir / "speech.wav"
        _pad_wav(src, mic, lead_s=0.5, tail_s=3.0)
        self.driver = launch_chromium(mic, self.workdir / "profile")
        open_page(self.driver, self.lb_url, "websocket")

    def start(self, node: str) -> None:
        """A live session on ``node`` (the cookie decides where the page's WebSocket goes)."""
        from tests.e2e.test_browser import by_testid, state_of, wait_for

        self.driver.add_cookie({"name": "ASRHUB_NODE", "value": node, "path": "/"})
        by_testid(self.driver, "start").click()
        wait_for(self.driver, lambda d: state_of(d, "connection-state") == "live", 60, "session.started")

    def value(self, script: str) -> Any:
        return self.driver.execute_script("return " + script)

    def follow(self, since: float, resumed: Callable[[float], None]) -> dict[str, Any]:
        """After the SIGTERM: the page resumes the same session on another node at once and
        transcribes on. Returns what the test checks (a wait that timed out: ``failed``, for
        that test alone)."""
        try:
            return self._follow(since, resumed)
        except BaseException as exc:  # pytest.fail's Failed is a BaseException
            return {"failed": str(exc)}

    def _follow(self, since: float, resumed: Callable[[float], None]) -> dict[str, Any]:
        from tests.e2e.test_browser import by_testid, error_text, finals, state_of, wait_for

        first = self.value("window.asrhub.ui.sessionId")
        before = len(finals(self.driver))

        def back(d: Any) -> bool:
            ui = d.execute_script("return [window.asrhub.ui.handovers, window.asrhub.ui.resumes]")
            return ui[0] >= 1 and ui[1] >= 1 and state_of(d, "connection-state") == "live"

        wait_for(self.driver, back, 60, "the page to resume after the hand-over")
        resumed(time.monotonic() - since)
        wait_for(self.driver, lambda d: len(finals(d)) >= before + 2, 60, "two finals after the resume")
        out = {
            "same_session": self.value("window.asrhub.ui.sessionId") == first,
            "handovers": self.value("window.asrhub.ui.handovers"),
            "error": error_text(self.driver),
            "finals_after": finals(self.driver)[before:],
            "expected": self.text,
        }
        by_testid(self.driver, "stop").click()
        wait_for(self.driver, lambda d: state_of(d, "connection-state") == "idle", 30, "the session to close")
        return out

    def close(self) -> None:
        if self.driver is not None:
            self.driver.quit()


async def sigterm_under_load(lb_url: str, ws_url: str, nodes: list[Node], workdir: Path) -> Handover:
    """Run the rolling-restart scenario once (see the module docstring)."""
    pcm, audio = read_audio_file(fixture(FILE))
    config = {"language": "en", "audio": audio}
    rate = audio["sample_rate"] * 2
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = round(time.monotonic() - began, 1)

    async with aiohttp.ClientSession() as http:

        async def idle() -> bool:
            counts = [((await healthz(http, n.url)) or {}).get("sessions", 1) for n in nodes]
            return all(count == 0 for count in counts)

        await until(idle, 30, "no sessions open")
    phase("idle")

    # asrhub stream, through the balancer: whichever node it lands on is the one to drain.
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asrhub",
        "stream",
        str(fixture(FILE)),  # at real time: still mid-file when the others have opened
        "--url",
        ws_url,
        "--realtime",
        "--json",
        "--language",
        "en",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    cli_events: list[tuple[float, dict[str, Any]]] = []

    async def read_cli() -> tuple[int, list[dict[str, Any]], str]:
        assert cli.stdout is not None and cli.stderr is not None
        errors = asyncio.create_task(cli.stderr.read())
        async for raw in cli.stdout:
            cli_events.append((time.monotonic(), json.loads(raw)))
        code = await cli.wait()
        return code, [e for _t, e in cli_events], (await errors).decode()

    cli_run = asyncio.create_task(read_cli())
    cli_started = time.monotonic()
    browser = Browser(lb_url, workdir)
    launching = loop.run_in_executor(None, browser.launch)

    try:
        async with aiohttp.ClientSession() as http:

            async def node_of_cli() -> Node | None:
                for node in nodes:
                    if ((await healthz(http, node.url)) or {}).get("sessions") == 1:
                        return node
                return None

            node = await until(node_of_cli, 30, "the CLI's session on a node")
        await asyncio.wait_for(launching, 90)
        phase("cli_on_a_node")
        await asyncio.wait_for(loop.run_in_executor(None, browser.start, node.name), 90)
        phase("browser_live")
    except BaseException:
        await asyncio.gather(launching, return_exceptions=True)
        await loop.run_in_executor(None, browser.close)
        cli_run.cancel()
        cli.kill()
        await asyncio.gather(cli_run, cli.wait(), return_exceptions=True)
        raise

    starts = [0] * SESSIONS
    first_final = [False] * SESSIONS
    second_final = [False] * SESSIONS
    term = asyncio.Event()
    term_at = [0.0]
    resumed_after: dict[str, float] = {}

    def resumed(who: str) -> None:
        if term.is_set() and who not in resumed_after:
            resumed_after[who] = time.monotonic() - term_at[0]

    async def client(i: int) -> list[Event]:
        # HAProxy's cookie pins the session to the node that drains; the reconnect after the
        # hand-over goes to a live node (the drained one is down, option redispatch).
        async with aiohttp.ClientSession(cookies={"ASRHUB_NODE": node.name}) as http:
            events: list[Event] = []
            source = chunks(pcm, rate // 10, pace=PACE * rate)
            async for event in stream(ws_url, source, config=config, http=http, resume=True):
                events.append(event)
                if isinstance(event, SpeechStarted):
                    starts[i] += 1
                elif isinstance(event, FinalTranscript):
                    first_final[i] = first_final[i] or event.segment_id == 1
                    if event.segment_id >= 2 and not term.is_set():
                        second_final[i] = True
                elif isinstance(event, SessionResumed):
                    resumed(f"ws{i}")
        return events

    notes: list[str] = []

    async def over_socketio() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(cookies={"ASRHUB_NODE": node.name}) as http:
            resumer = SocketIoResumer(lb_url, http, config)
            resumer.notes = notes
            resumer.on_resumed = lambda: resumed("socketio")
            return await resumer.run(chunks(pcm, rate // 10, pace=PACE * rate))

    clients = [asyncio.create_task(client(i)) for i in range(SESSIONS)]
    sio_run = asyncio.create_task(over_socketio())
    tasks: list[asyncio.Task[Any]] = [*clients, sio_run, cli_run]
    try:
        async with aiohttp.ClientSession() as http:

            async def all_on_node() -> bool:
                return ((await healthz(http, node.url)) or {}).get("sessions") == SESSIONS + 3

            await until(all_on_node, 30, "every session on the node to drain")
        in_second = lambda: all(first_final) and all(n >= 2 for n in starts)  # noqa: E731
        await eventually(in_second, 60, "every client in its second utterance")
        mid_utterance = sum(1 for done in second_final if not done)
        assert node.proc is not None
        phase("sigterm")
        term_at[0] = time.monotonic()
        notes.append(f"{term_at[0]:.2f} SIGTERM, {term_at[0] - cli_started:.1f} s into the CLI's file")
        node.proc.send_signal(signal.SIGTERM)
        term.set()
        in_browser = loop.run_in_executor(
            None, browser.follow, term_at[0], lambda s: resumed_after.setdefault("browser", s)
        )
        try:
            exit_code = await loop.run_in_executor(None, node.proc.wait, 60)
        except subprocess.TimeoutExpired:
            tail = await asyncio.to_thread(node.log_tail, 8000)
            node.kill()
            raise AssertionError(f"the drained node did not exit within 60 s; its log:\n{tail}") from None
        exit_after = time.monotonic() - term_at[0]
        notes.append(f"drained node's log: {node.log_tail()[-1500:]}")
        results = await asyncio.wait_for(asyncio.gather(*clients), 120)
        sio_got = await asyncio.wait_for(sio_run, 60)
        cli_result = await asyncio.wait_for(cli_run, 60)
        page = await asyncio.wait_for(in_browser, 120)
        phase("all_done")
    finally:
        await loop.run_in_executor(None, browser.close)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if cli.returncode is None:
            cli.kill()
            await cli.wait()
    sid = next((m.get("session_id") for m in sio_got if m.get("type") == "session.started"), None)
    for each in nodes:
        lines = (await asyncio.to_thread(Path(each.logs.name).read_text, errors="replace")).splitlines()
        mine = [line[:400] for line in lines if (sid and sid in line) or '"level": "error"' in line]
        notes.append(f"{each.name}: " + "\n".join(mine[-25:]))
    for at, event in cli_events:
        if event["type"] == "session.resumed" and at > term_at[0]:
            resumed_after.setdefault("cli", at - term_at[0])
            break
    return Handover(
        node=node,
        clients=results,
        socketio=sio_got,
        cli=cli_result,
        mid_utterance=mid_utterance,
        resumed_after_s=resumed_after,
        exit_after_s=exit_after,
        exit_code=exit_code,
        notes=notes,
        browser=page,
        cli_at_sigterm_s=term_at[0] - cli_started,
        phases=phases,
    )


def run_in_thread(make: Callable[[], Awaitable[Handover]]) -> Handover:
    """Run the scenario on an event loop of its own, off the test's thread (a module fixture
    is set up outside any test's loop)."""
    from concurrent.futures import ThreadPoolExecutor

    async def main() -> Handover:
        return await make()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()
