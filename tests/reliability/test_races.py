"""Races over real transports (the in-process core races are in tests/core/test_session.py):
closing one session from several places at once, the same session taken by two connections at
once, feeding while closing, two subscribers detaching at once, a resume arriving as its window
expires. Every round: only documented answers, each session closed exactly once, nothing left.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import aiohttp
import pytest

from asrhub.transports.common import CONNECTIONS
from asrhub.transports.sse import SESSIONS
from tests.transports.conftest import ServerThread

from .conftest import reliability_settings
from .harness import RawWS, Watch, WSClosed, chunks, eventually, pcm_of

SPEECH = pcm_of("quick_fox.wav")
NONE = {"provider": "none"}
WINDOW_S = 0.3


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(reliability_settings(resume_window_s=WINDOW_S)) as srv:
        yield srv


@pytest.fixture
def watch(server: ServerThread) -> Iterator[Watch]:
    with Watch(server.loop) as w:
        yield w


def rounds(long_run: bool, n: int = 25) -> int:
    return n * 10 if long_run else n


def closed_total(server: ServerThread, transport: str) -> float:
    """Sessions closed so far on ``transport`` (any reason), from the server's hub's metrics."""
    body, _ = server.hub.metrics.render()
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("asrhub_sessions_closed_total{") and f'transport="{transport}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def state(server: ServerThread) -> dict[str, int]:
    def read() -> dict[str, int]:
        app = server.app
        return {
            "sessions": len(server.hub.sessions),
            "resumable": len(server.hub.resumes),
            "connections": len(app[CONNECTIONS]),
            "http sessions": len(app[SESSIONS]),
        }

    return await asyncio.to_thread(server.call, read)


async def nothing_left(
    server: ServerThread, within: float = 10.0, http_linger: bool = False
) -> dict[str, int]:
    async def empty() -> bool:
        left = await state(server)
        if http_linger:
            left.pop("http sessions")
        return not any(left.values())

    await eventually(empty, within)
    return await state(server)


async def test_closing_one_sse_session_from_four_places_at_once(
    server: ServerThread, watch: Watch, long_run: bool
) -> None:
    """end, DELETE, an audio frame and a dropped event stream, all at once."""
    base, n = server.http, rounds(long_run)
    before = await asyncio.to_thread(server.call, lambda: closed_total(server, "sse"))
    seen: set[tuple[str, int]] = set()
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            async with http.post(base + "/v1/sessions", json={"config": NONE}) as resp:
                sid = (await resp.json())["session_id"]
            stream = await http.get(f"{base}/v1/sessions/{sid}/events")

            results = await asyncio.gather(
                call(http, "POST", f"{base}/v1/sessions/{sid}/end"),
                call(http, "DELETE", f"{base}/v1/sessions/{sid}"),
                call(http, "POST", f"{base}/v1/sessions/{sid}/audio", SPEECH[:3200]),
                drop_stream(stream, random.Random(i).uniform(0, 0.01)),
            )
            seen.update(results)
    allowed = {
        ("POST end", 200),
        ("POST end", 404),
        ("DELETE", 204),
        ("DELETE", 404),
        ("POST audio", 204),
        ("POST audio", 409),
        ("POST audio", 404),
        ("drop events", 0),
    }
    assert seen <= allowed, seen - allowed
    after = await asyncio.to_thread(server.call, lambda: closed_total(server, "sse"))
    assert after - before == n  # each session closed exactly once
    await nothing_left(server, http_linger=True)
    assert watch.errors() == []


async def call(
    http: aiohttp.ClientSession, method: str, url: str, data: bytes | None = None
) -> tuple[str, int]:
    async with http.request(method, url, data=data) as resp:
        await resp.read()
        last = url.rsplit("/", 1)[1]
        return (f"{method} {last}" if last in ("end", "audio") else method), resp.status


async def drop_stream(stream: aiohttp.ClientResponse, after: float) -> tuple[str, int]:
    await asyncio.sleep(after)
    stream.close()
    return "drop events", 0


async def test_the_same_session_taken_by_two_connections_at_once(
    server: ServerThread, watch: Watch, long_run: bool
) -> None:
    """The owner vanishes while two new connections resume its token at the same instant:
    exactly one ends up with the session; the other is closed with 4409 (taken over)."""
    port, n = server.port, rounds(long_run)
    before = await asyncio.to_thread(server.call, lambda: closed_total(server, "websocket"))
    for _ in range(n):
        old = await RawWS.connect(port)
        await old.send_json({"type": "session.start", "config": NONE, "resume": True})
        token = (await old.recv_json())["resume_token"]
        a, b = await RawWS.connect(port), await RawWS.connect(port)
        message = {"type": "session.resume", "token": token}
        old.reset()
        await asyncio.gather(a.send_json(message), b.send_json(message))

        async def outcome(ws: RawWS) -> str:
            try:
                while (event := await ws.recv_json(10))["type"] != "session.resumed":
                    assert event["type"] != "error", event
            except WSClosed as closed:
                return f"closed {closed.code}"
            await ws.send_json({"type": "session.end"})
            try:
                events = await ws.events_until(lambda e: e["type"] == "session.closed", within=10)
            except WSClosed as closed:  # taken over between its resume and its end
                return f"closed {closed.code}"
            return "owner" if events and events[-1]["type"] == "session.closed" else f"closed {ws.close_code}"

        results = sorted(await asyncio.gather(outcome(a), outcome(b)))
        assert results == ["closed 4409", "owner"], results
        for ws in (a, b):
            ws.writer.close()
    after = await asyncio.to_thread(server.call, lambda: closed_total(server, "websocket"))
    assert after - before == n
    await nothing_left(server)
    assert watch.errors() == []


async def test_a_resume_racing_its_window(server: ServerThread, watch: Watch, long_run: bool) -> None:
    """Resumes sent around the moment the window expires: each is either resumed (the session
    goes on) or refused with resume_failed (it was closed) — never both, never a zombie.

    The delay follows a staircase around the expiry (longer after a resume, shorter after a
    refusal), so the rounds sit at the boundary whatever the machine's load, and both outcomes
    must occur: the race window was hit, not just one side of it."""
    port, n = server.port, rounds(long_run, 20)
    delay, step = WINDOW_S, 0.04
    answers: list[str] = []
    for _ in range(n):
        ws = await RawWS.connect(port)
        await ws.send_json({"type": "session.start", "config": NONE, "resume": True})
        token = (await ws.recv_json())["resume_token"]
        await ws.send_bytes(SPEECH[:6400])
        await ws.send_json({"type": "ping"})
        await ws.events_until(lambda e: e["type"] == "pong", within=10)
        ws.reset()
        await asyncio.sleep(max(0.0, delay))
        ws2 = await RawWS.connect(port)
        await ws2.send_json({"type": "session.resume", "token": token})
        answer = await ws2.recv_json(10)
        answers.append(answer["type"] if answer["type"] == "session.resumed" else answer["code"])
        delay += step if answer["type"] == "session.resumed" else -step
        if answer["type"] == "session.resumed":
            await ws2.send_bytes(SPEECH[6400:9600])  # it lives on
            await ws2.send_json({"type": "session.end"})
            events = await ws2.events_until(lambda e: e["type"] == "session.closed", within=10)
            assert events[-1] == {"type": "session.closed", "reason": "end"}, events
        await ws2.close()
    assert set(answers) == {"session.resumed", "resume_failed"}, answers
    await nothing_left(server)
    assert watch.errors() == []


async def test_feeding_while_closing(server: ServerThread, watch: Watch, long_run: bool) -> None:
    """Audio keeps coming after session.end (WebSocket) and while DELETE lands (SSE): it is
    refused once with bad_message, or answered 409/404, and the session closes once."""
    port, base, n = server.port, server.http, rounds(long_run, 10)
    for _ in range(n):
        ws = await RawWS.connect(port)
        await ws.send_json({"type": "session.start", "config": NONE})
        await ws.recv_json()
        reader = asyncio.create_task(ws.events_until(lambda e: e["type"] == "session.closed", within=10))
        frames = chunks(SPEECH, 20)
        for i, frame in enumerate(frames):
            if i == len(frames) // 2:
                await ws.send_json({"type": "session.end"})
            try:
                await ws.send_bytes(frame)
            except ConnectionError:
                break
            await asyncio.sleep(0.001)  # let the reader read what arrives
        events = await reader
        errors = [e for e in events if e["type"] == "error"]
        assert [e["code"] for e in errors] in ([], ["bad_message"]), errors
        assert [e["type"] for e in events].count("session.closed") == 1
        ws.writer.close()
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.post(base + "/v1/sessions", json={"config": NONE}) as resp:
                sid = (await resp.json())["session_id"]

            url = f"{base}/v1/sessions/{sid}"
            fed = [call(http, "POST", url + "/audio", frame) for frame in chunks(SPEECH, 50)]
            statuses = await asyncio.gather(*fed, delete_after(http, url, 0.02))
            assert set(statuses) <= {
                ("POST audio", 204),
                ("POST audio", 409),
                ("POST audio", 404),
                ("DELETE", 204),
            }, statuses
            assert ("DELETE", 204) in statuses
    await nothing_left(server, http_linger=True)
    assert watch.errors() == []


async def delete_after(http: aiohttp.ClientSession, url: str, delay: float) -> tuple[str, int]:
    await asyncio.sleep(delay)
    return await call(http, "DELETE", url)


async def subscribe(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    """The events stream; 409 while the hub has not yet noticed the previous one dropped."""
    for _ in range(100):
        resp = await http.get(url)
        if resp.status != 409:
            return resp
        resp.close()
        await asyncio.sleep(0.02)
    raise AssertionError("the previous subscriber was never released")


async def test_two_subscribers_detaching_at_once(server: ServerThread, watch: Watch, long_run: bool) -> None:
    """SSE: two event streams opened at once (one wins, one gets 409), then the winner and a
    new one drop at once; in the hub, two queues of one session detach while it emits."""
    base, n = server.http, rounds(long_run, 10)
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.post(base + "/v1/sessions", json={"config": NONE}) as resp:
                sid = (await resp.json())["session_id"]
            url = f"{base}/v1/sessions/{sid}/events"
            first, second = await asyncio.gather(http.get(url), http.get(url))
            assert sorted([first.status, second.status]) == [200, 409]
            winner = first if first.status == 200 else second
            (second if winner is first else first).close()
            await winner.content.readuntil(b"\n\n")  # session.started
            winner.close()
            third = await subscribe(http, url)
            assert third.status == 200
            third.close()
            async with http.post(f"{base}/v1/sessions/{sid}/audio", data=SPEECH[:16000]) as resp:
                assert resp.status == 204
            async with await subscribe(http, url) as last:  # a new subscriber is still served
                assert last.status == 200
                async with http.post(f"{base}/v1/sessions/{sid}/end") as resp:
                    assert resp.status == 200
                body = await asyncio.wait_for(last.read(), 10)
            assert body.count(b"event: session.closed") == 1

    def detach_in_the_hub() -> tuple[int, int]:
        session = server.hub.open(NONE, transport="inproc")
        queues = [session.queue(8), session.queue(8)]
        loop = asyncio.get_running_loop()
        loop.call_soon(queues[0].close)
        loop.call_soon(queues[1].close)
        loop.call_soon(session.close, "done")
        return session.subscribers, len(queues)

    subscribers, _ = await asyncio.to_thread(server.call, detach_in_the_hub)
    assert subscribers == 2
    state_after = await nothing_left(server, http_linger=True)
    assert state_after["sessions"] == 0
    sessions = server.hub.sessions
    assert await asyncio.to_thread(server.call, lambda: sum(s.subscribers for s in sessions.values())) == 0
    assert watch.errors() == []
