"""The hub as a cluster, all real and on 127.0.0.1: ``redis-server``, three ``asrhub serve``
nodes (faster-whisper tiny.en) and ``haproxy -f deploy/haproxy.cfg`` in front.

* real speech through the balancer over WebSocket, Socket.io (long-polling: the balancer's
  cookie keeps it on one node) and HTTP+SSE gives the right finals;
* Redis stopped and restarted under live sessions: they stream on, new sessions are admitted
  on the nodes' own limits, nothing hangs; afterwards the nodes re-create their leases;
* ``max_sessions`` = K across the three nodes: K open, the next is refused with ``capacity`` on
  every node; a killed node's capacity comes back within the lease time;
* SIGKILL of the node that owns 10 live resumable sessions mid-utterance: every client
  resumes through the balancer on another node, re-sends from ``resume_from_bytes``, and gets
  each utterance's final exactly once, in order, with all the words;
* SIGTERM of the node that runs 10 ``asrhub.client`` sessions, a Socket.io session, an
  ``asrhub stream`` and the browser UI, all resumable and mid-utterance (a rolling restart):
  the node hands each over (``session.handover``), every client resumes on another node, every
  word arrives once, in order; ``asrhub stream`` exits 0 — and 1, with one line, when its hub
  is SIGKILLed with nowhere to resume.

One cluster serves the module (started in parallel; ~10 s). Waits poll against deadlines.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import socketio
from redis.asyncio import Redis as RedisClient

from asrhub.client import chunks, read_audio_file, stream
from asrhub.frames import Event, FinalTranscript, SessionClosed, SessionResumed, SpeechStarted
from tests.audio_utils import fixture, fixture_entry, wer

from .conftest import HAProxy, Node, Redis, eventually, healthz, start_nodes, until
from .handover import FILE, Handover, run_in_thread, sigterm_under_load

MAX_SESSIONS = 14
LEASE_S = 3.0
FIGURES: dict[str, Any] = {}


@dataclass
class Cluster:
    redis: Redis
    nodes: list[Node]
    lb: HAProxy
    env: dict[str, str] = field(default_factory=dict)

    @property
    def ws(self) -> str:
        return self.lb.url.replace("http", "ws", 1) + "/v1/stream"

    def restart(self, node: Node) -> None:
        node.kill()
        node.start()


@pytest.fixture(scope="module")
def cluster(redis_server: Redis) -> Iterator[Cluster]:
    env = {
        "ASRHUB_CLUSTER__REDIS_URL": redis_server.url,
        "ASRHUB_CLUSTER__LEASE_S": str(LEASE_S),
        "ASRHUB_LIMITS__MAX_SESSIONS": str(MAX_SESSIONS),
        "ASRHUB_LIMITS__RESUME_WINDOW_S": "60",
        "ASRHUB_DEFAULT_PROVIDER": "whisper",
        "ASRHUB_LOG__LEVEL": "info",
        "ASRHUB_METRICS__OPERATOR_SAMPLE": "0",
    }
    nodes = [Node(f"hub{i}", env) for i in (1, 2, 3)]
    lb = HAProxy(nodes)
    try:
        start_nodes(nodes)
        lb.start()
        yield Cluster(redis_server, nodes, lb, env)
    finally:
        lb.stop()
        for node in nodes:
            node.close()
        if FIGURES:
            print("\ncluster figures:", json.dumps(FIGURES))


async def lb_ready(cluster: Cluster) -> None:
    """Every node is up in haproxy's health checks (a node an earlier test killed and could not
    restart is started again first)."""
    dead = [n for n in cluster.nodes if n.proc is None or n.proc.poll() is not None]
    for node in dead:
        cluster.restart(node)
    for node in dead:
        await asyncio.get_running_loop().run_in_executor(None, node.wait_ready)

    async def all_up() -> bool:
        states = await asyncio.get_running_loop().run_in_executor(None, cluster.lb.servers_up)
        return len(states) == 3 and all(states.values())

    await until(all_up, 60, "haproxy to see all three nodes up")


def finals(events: list[Event]) -> list[FinalTranscript]:
    return [e for e in events if isinstance(e, FinalTranscript)]


def reference(name: str) -> list[str]:
    return [s["text"] for s in fixture_entry(name)["segments"]]


async def read_sse(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    data: list[str] = []
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield json.loads("\n".join(data))
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


# ---------------------------------------------------------------------------------- transports


async def test_real_speech_through_the_balancer_on_every_transport(cluster: Cluster) -> None:
    await lb_ready(cluster)
    pcm, audio = read_audio_file(fixture("address_time.wav"))
    (expected,) = reference("address_time.wav")

    async def over_websocket() -> tuple[str, list[Any]]:
        events = [e async for e in stream(cluster.ws, pcm, config={"language": "en", "audio": audio})]
        assert isinstance(events[-1], SessionClosed)
        errors = [e.to_dict() for e in events if e.type == "error"]
        return " ".join(f.text for f in finals(events)), errors

    async def over_socketio() -> tuple[str, list[Any]]:
        # Long-polling: several HTTP requests per connection, kept on one node by haproxy's
        # cookie (the jar must accept cookies for an IP address).
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            sio = socketio.AsyncClient(reconnection=False, http_session=http)
            got: list[dict[str, Any]] = []
            closed = asyncio.Event()

            @sio.on("*")
            async def any_event(event: str, data: Any) -> None:
                got.append(data)
                if event == "session.closed":
                    closed.set()

            await sio.connect(cluster.lb.url, transports=["polling"], socketio_path="socket.io")
            await sio.emit("session.start", {"type": "session.start", "config": {"language": "en"}})
            async for frame in chunks(pcm, 6400, pace=4 * 32000):  # engine.io takes 16 packets a POST
                await sio.emit("audio", frame)
            await sio.emit("session.end", {"type": "session.end"})
            await asyncio.wait_for(closed.wait(), 60)
            await sio.disconnect()
        assert got[0]["type"] == "session.started"
        errors = [m for m in got if m.get("type") == "error"]
        return " ".join(m["text"] for m in got if m.get("type") == "transcript.final"), errors

    async def over_sse() -> tuple[str, list[Any]]:
        jar = aiohttp.CookieJar(unsafe=True)  # the session lives on one node: the cookie says which
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            base = cluster.lb.url
            async with http.post(f"{base}/v1/sessions", json={"config": {"language": "en"}}) as resp:
                assert resp.status == 201, await resp.text()
                sid = (await resp.json())["session_id"]
            events: list[dict[str, Any]] = []

            async def subscribe() -> None:
                async with http.get(f"{base}/v1/sessions/{sid}/events") as resp:
                    assert resp.status == 200
                    async for event in read_sse(resp):
                        events.append(event)

            reader = asyncio.create_task(subscribe())
            async for frame in chunks(pcm, 8000):
                async with http.post(f"{base}/v1/sessions/{sid}/audio", data=frame) as resp:
                    assert resp.status == 204, await resp.text()
            async with http.post(f"{base}/v1/sessions/{sid}/end") as resp:
                assert resp.status == 200
            await asyncio.wait_for(reader, 60)
        assert events[-1]["type"] == "session.closed"
        errors = [e for e in events if e["type"] == "error"]
        return " ".join(e["text"] for e in events if e["type"] == "transcript.final"), errors

    texts = await asyncio.gather(over_websocket(), over_socketio(), over_sse())
    for transport, (text, errors) in zip(("websocket", "socketio", "sse"), texts, strict=True):
        assert wer(expected, text) <= 0.15, (transport, expected, text, errors)


# ---------------------------------------------------------------------------------- Redis outage


async def test_redis_stopped_and_restarted_under_live_sessions(cluster: Cluster) -> None:
    """Live sessions stream on; a new session is admitted on the node's own limits; a resume
    that needs another node's record fails cleanly; nothing hangs; after the restart the nodes
    re-create their leases in the (empty) Redis."""
    await lb_ready(cluster)
    pcm, audio = read_audio_file(fixture("silences.wav"))
    expected = reference("silences.wav")
    config = {"language": "en", "audio": audio}
    progress: list[int] = [0, 0]

    async def live(i: int) -> list[Event]:
        events: list[Event] = []
        async for event in stream(cluster.ws, pcm, config=config, realtime=True, chunk_ms=100):
            events.append(event)
            if isinstance(event, FinalTranscript):
                progress[i] += 1
        return events

    streams = [asyncio.create_task(live(i)) for i in range(2)]
    await eventually(lambda: all(n >= 1 for n in progress), 60, "each live session's first final")
    cluster.redis.stop()
    try:
        # A new session while Redis is down: admitted (local limits), answered promptly.
        started = time.monotonic()
        quick, quick_audio = read_audio_file(fixture("quick_fox.wav"))
        events = [e async for e in stream(cluster.ws, quick, config={"language": "en", "audio": quick_audio})]
        FIGURES["new_session_during_outage_s"] = round(time.monotonic() - started, 2)
        assert "quick brown fox" in " ".join(f.text for f in finals(events)).lower()
        # /healthz and /metrics stay answered (nothing waits on Redis).
        async with aiohttp.ClientSession() as http:
            for node in cluster.nodes:
                assert (await healthz(http, node.url) or {}).get("status") == "ok"
    finally:
        cluster.redis.start()
    results = await asyncio.gather(*streams)
    for events in results:
        texts = [f.text for f in finals(events)]
        assert len(texts) == len(expected), texts
        assert wer(" ".join(expected), " ".join(texts)) <= 0.15, texts
        assert isinstance(events[-1], SessionClosed)
    # Redis came back empty: the nodes re-create the leases of what they run (renewal).
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(cluster.redis.url)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(cluster.ws)
            await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            assert json.loads((await ws.receive()).data)["type"] == "session.started"

            async def leases_back() -> bool:
                return bool(await client.zcard("asrhub:leases") >= 1)

            await until(leases_back, 5 * LEASE_S, "the open session's lease to be back in Redis")
            await ws.close()
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------- capacity


async def test_max_sessions_holds_across_nodes_and_a_dead_nodes_capacity_returns(cluster: Cluster) -> None:
    await lb_ready(cluster)
    hub1, _hub2, hub3 = cluster.nodes
    async with aiohttp.ClientSession() as http:

        async def open_on(node: Node) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
            ws = await http.ws_connect(f"ws://127.0.0.1:{node.port}/v1/stream")
            await ws.send_str(json.dumps({"type": "session.start", "config": {"provider": "none"}}))
            return ws, json.loads((await ws.receive()).data)

        # Sessions of earlier tests may still be closing: wait for an empty cluster.
        async def cluster_idle() -> bool:
            counts = [((await healthz(http, n.url)) or {}).get("sessions", 1) for n in cluster.nodes]
            return all(count == 0 for count in counts)

        await until(cluster_idle, 30, "no sessions open")
        held = []
        for i in range(MAX_SESSIONS):
            ws, first = await open_on(cluster.nodes[i % 3])
            assert first["type"] == "session.started", first
            held.append(ws)
        for node in cluster.nodes:  # the next one is refused, whichever node it reaches
            ws, first = await open_on(node)
            assert first["type"] == "error" and first["code"] == "capacity", first
            await ws.close()
        # hub3 dies holding 4 sessions: they stop counting once their leases expire.
        killed_at = time.monotonic()
        hub3.kill()
        survivors = [ws for i, ws in enumerate(held) if i % 3 != 2]

        async def admitted() -> bool:
            ws, first = await open_on(hub1)
            if first["type"] == "session.started":
                survivors.append(ws)
                return True
            await ws.close()
            return False

        await until(admitted, 4 * LEASE_S, "capacity to come back after the node's death", every=0.2)
        FIGURES["capacity_back_after_kill_s"] = round(time.monotonic() - killed_at, 2)
        for ws in survivors:
            await ws.close()
    cluster.restart(hub3)  # for the tests after this one
    await asyncio.get_running_loop().run_in_executor(None, hub3.wait_ready)


# ---------------------------------------------------------------------------------- SIGKILL


SESSIONS = 10


async def test_sigkill_of_the_owner_of_10_live_sessions_every_client_resumes_elsewhere(
    cluster: Cluster,
) -> None:
    await lb_ready(cluster)
    pcm, audio = read_audio_file(fixture("silences.wav"))
    expected = reference("silences.wav")
    config = {"language": "en", "audio": audio}
    rate = audio["sample_rate"] * 2
    starts = [0] * SESSIONS  # vad.speech_started seen (a final may lag behind its utterance)
    first_final = [False] * SESSIONS
    second_final = [False] * SESSIONS
    killed = asyncio.Event()
    killed_at = [0.0]
    first_after: dict[int, float] = {}

    async def client(i: int) -> list[Event]:
        # The cookie sends every session to hub1 through the balancer; after hub1 dies, the
        # balancer redispatches the reconnects to the other nodes.
        async with aiohttp.ClientSession(cookies={"ASRHUB_NODE": "hub1"}) as http:
            events: list[Event] = []
            source = chunks(pcm, rate // 10, pace=2 * rate)  # twice real time
            async for event in stream(cluster.ws, source, config=config, http=http, resume=True):
                events.append(event)
                if isinstance(event, SpeechStarted):
                    starts[i] += 1
                if isinstance(event, FinalTranscript) and event.segment_id == 1:
                    first_final[i] = True
                if isinstance(event, FinalTranscript) and event.segment_id >= 2:
                    second_final[i] = second_final[i] or not killed.is_set()
                    if killed.is_set() and i not in first_after:
                        first_after[i] = time.monotonic() - killed_at[0]
        return events

    clients = [asyncio.create_task(client(i)) for i in range(SESSIONS)]
    hub1 = cluster.nodes[0]

    async def on_hub1() -> bool:
        async with aiohttp.ClientSession() as http:
            return ((await healthz(http, hub1.url)) or {}).get("sessions") == SESSIONS

    await until(on_hub1, 30, "all 10 sessions on hub1")
    await eventually(
        lambda: all(first_final) and all(n >= 2 for n in starts), 60, "every client in its second utterance"
    )
    mid_utterance = sum(1 for done in second_final if not done)  # its final not out yet
    killed_at[0] = time.monotonic()
    hub1.kill()
    killed.set()
    try:
        results = await asyncio.wait_for(asyncio.gather(*clients), 120)
    finally:
        cluster.restart(hub1)  # for the tests after this one, whatever happens here
    delays = sorted(first_after.values())
    FIGURES["kill_to_first_new_final_s"] = {
        "median": round(delays[len(delays) // 2], 2),
        "max": round(delays[-1], 2),
    }
    assert mid_utterance >= SESSIONS // 2, "the kill did not land mid-utterance"
    for events in results:
        resumed = [e for e in events if isinstance(e, SessionResumed)]
        assert len(resumed) == 1 and resumed[0].resume_from_bytes > 0, resumed
        got = finals(events)
        ids = [f.segment_id for f in got]
        assert ids == list(range(1, len(expected) + 1)), ids  # one final each, in order
        assert [f.start for f in got] == sorted(f.start for f in got)
        assert wer(" ".join(expected), " ".join(f.text for f in got)) <= 0.15, [f.text for f in got]
        assert isinstance(events[-1], SessionClosed) and events[-1].reason == "end"
    await asyncio.get_running_loop().run_in_executor(None, hub1.wait_ready)


# ---------------------------------------------------------------------------------- takeover


async def test_resume_on_another_node_while_the_owner_lives_fences_the_old_copy(
    cluster: Cluster,
) -> None:
    """The client vanishes from hub2 (TCP reset) after utterance 1 and resumes directly on hub3
    while hub2 still runs the session: hub3 takes it over from the log, hub2's copy is closed
    (takeover channel / fenced appends), every utterance gets exactly one final."""
    from tests.reliability.harness import RawWS

    await lb_ready(cluster)
    _hub1, hub2, hub3 = cluster.nodes
    pcm, audio = read_audio_file(fixture("silences.wav"))
    expected = reference("silences.wav")
    segments = fixture_entry("silences.wav")["segments"]
    bps = audio["sample_rate"] * 2

    ws = await RawWS.connect(hub2.port)
    await ws.send_json(
        {"type": "session.start", "config": {"language": "en", "audio": audio}, "resume": True}
    )
    started = await ws.recv_json()
    token = started["resume_token"]
    # A live change before the audio: the node that takes the session over must rebuild it with
    # the updated config (its cluster record is rewritten), not the one it started with.
    await ws.send_json({"type": "session.update", "config": {"partials": False}})
    await ws.events_until(lambda e: e["type"] == "session.updated", within=10)
    # Utterance 1 and the first half of utterance 2, then vanish.
    cut = int((segments[1]["start"] + 1.0) * bps) // 2 * 2
    for off in range(0, cut, 3200):
        await ws.send_bytes(pcm[off : min(off + 3200, cut)])
    seen = await ws.events_until(lambda e: e["type"] == "transcript.final", within=60)
    first = [e for e in seen if e["type"] == "transcript.final"]
    assert [f["segment_id"] for f in first] == [1]
    assert not [e for e in seen if e["type"] == "transcript.partial"]
    records = RedisClient.from_url(cluster.redis.url)

    async def record_updated() -> bool:
        config = await records.hget(f"asrhub:resume:{token}", "config")
        return config is not None and json.loads(config)["partials"] is False

    await until(record_updated, 10, "the session's cluster record to hold the updated config")
    await records.aclose()
    ws.reset()
    ws.writer.close()

    ws2 = await RawWS.connect(hub3.port)
    # A client needs nothing before the end of its last final and says so: the log may lag
    # behind what the client received (the final was sent before its append reached Redis).
    confirmed = int(first[0]["end"] * bps) // 2 * 2
    await ws2.send_json(
        {"type": "session.resume", "token": token, "last_segment_id": 1, "audio_from_bytes": confirmed}
    )
    resumed = await ws2.recv_json()
    assert resumed["type"] == "session.resumed", resumed
    assert resumed["session_id"] == started["session_id"] and resumed["complete"] is True
    assert resumed["config"]["partials"] is False, resumed["config"]
    offset = resumed["resume_from_bytes"]
    assert confirmed <= offset <= cut  # from the end of final 1 (or the logged end, if later)
    for off in range(offset, len(pcm), 3200):
        await ws2.send_bytes(pcm[off : off + 3200])
    await ws2.send_json({"type": "session.end"})
    rest = await ws2.events_until(lambda e: e["type"] == "session.closed", within=90)
    await ws2.close()
    finals_after = [e for e in rest if e["type"] == "transcript.final"]
    assert [f["segment_id"] for f in finals_after] == list(range(2, len(expected) + 1)), finals_after
    assert not [e for e in rest if e["type"] == "transcript.partial"]  # rebuilt with the update
    text = " ".join(f["text"] for f in first + finals_after)
    assert wer(" ".join(expected), text) <= 0.15, text
    assert finals_after[0]["start"] >= first[0]["end"]  # stream times continue

    async def hub2_let_go() -> bool:
        async with aiohttp.ClientSession() as http:
            return ((await healthz(http, hub2.url)) or {}).get("sessions") == 0

    await until(hub2_let_go, 30, "hub2 to close its copy of the session")


# ---------------------------------------------------------------------------------- SIGTERM


@pytest.fixture(scope="module")
def handover(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Handover:
    """One rolling restart under load, shared by the tests below (tests/cluster/handover.py):
    SIGTERM of the node that runs 10 ``asrhub.client`` sessions, a Socket.io session, an
    ``asrhub stream`` and the browser UI, all resumable and mid-utterance. The node is started
    again afterwards (not waited for: the tests after these wait through ``lb_ready``)."""

    async def scenario() -> Handover:
        began = time.monotonic()
        await lb_ready(cluster)
        FIGURES["handover_lb_ready_s"] = round(time.monotonic() - began, 1)
        workdir = tmp_path_factory.mktemp("browser")
        return await sigterm_under_load(cluster.lb.url, cluster.ws, cluster.nodes, workdir)

    result = run_in_thread(scenario)
    cluster.restart(result.node)
    expected = " ".join(reference(FILE))
    lost = repeated = 0
    texts = [" ".join(f.text for f in finals(events)) for events in result.clients]
    texts.append(" ".join(m["text"] for m in result.socketio if m.get("type") == "transcript.final"))
    texts.append(" ".join(e["text"] for e in result.cli[1] if e["type"] == "transcript.final"))
    for text in texts:
        missing, extra = word_errors(expected, text)
        lost, repeated = lost + missing, repeated + extra
    delays = sorted(result.resumed_after_s.values())
    FIGURES["sigterm_handover"] = {
        "sessions": len(texts),
        "mid_utterance": result.mid_utterance,
        "resumed": len(delays),
        "sigterm_to_all_resumed_s": round(delays[-1], 2) if delays else None,
        "sigterm_to_resumed_median_s": round(delays[len(delays) // 2], 2) if delays else None,
        "node_exit_after_s": round(result.exit_after_s, 2),
        "words_lost": lost,
        "words_repeated": repeated,
        "reference_words": len(expected.split()) * len(texts),
        "cli_at_sigterm_s": round(result.cli_at_sigterm_s, 1),
        "phases_s": result.phases,
    }
    return result


def word_errors(expected: str, text: str) -> tuple[int, int]:
    """(reference words missing, words added) in ``text``: deletions and insertions of the
    alignment (a misheard word is a substitution, neither lost nor repeated)."""
    import jiwer

    from tests.audio_utils import normalize_text

    out = jiwer.process_words(normalize_text(expected), normalize_text(text) or "-")
    return out.deletions, out.insertions


def assert_handed_over_then_resumed(kinds: list[str], notes: list[str], who: str) -> None:
    """One ``session.handover``, then ``session.resumed`` on the node that took over (once, or
    again if the new connection dropped too: a Socket.io client whose hub reads nothing for
    its ping timeout, say, on a machine loaded past its cores)."""
    told, resumed = kinds.count("session.handover"), kinds.count("session.resumed")
    if told == 1 and resumed >= 1 and kinds.index("session.handover") < kinds.index("session.resumed"):
        return
    story = [k for k in kinds if not k.startswith(("vad.", "transcript.partial"))]
    pytest.fail(f"{who}: {story}\n" + "\n".join(notes))  # whole: an assert's message is cut


def assert_every_utterance_once(ids: list[int], texts: list[str], who: str) -> None:
    expected = reference(FILE)
    assert ids == list(range(1, len(expected) + 1)), (who, ids, texts)  # once each, in order
    for want, text in zip(expected, texts, strict=True):
        assert wer(want, text) <= 0.25, (who, want, text)  # the cut utterance is whole


def test_sigterm_hands_10_live_sessions_over_and_no_word_is_lost_or_repeated(handover: Handover) -> None:
    """The drained node keeps each session's utterance in flight unfinalized, tells each client
    to resume elsewhere (``session.handover`` + close 1012), and exits as soon as every
    session was claimed by another node; every client resumes there through the balancer,
    re-sends from its offset, and gets every utterance's final once, in order, whole."""
    assert handover.mid_utterance >= SESSIONS // 2, "the SIGTERM did not land mid-utterance"
    assert handover.exit_code == 0
    assert handover.exit_after_s < 20, "the node waited for its grace period instead of the claims"
    for i, events in enumerate(handover.clients):
        assert_handed_over_then_resumed([e.type for e in events], handover.notes, f"ws{i}")
        got = finals(events)
        assert_every_utterance_once([f.segment_id for f in got], [f.text for f in got], f"ws{i}")
        assert [f.start for f in got] == sorted(f.start for f in got)
        assert isinstance(events[-1], SessionClosed) and events[-1].reason == "end"
    assert len(handover.resumed_after_s) == SESSIONS + 3, handover.resumed_after_s


def test_a_socketio_client_follows_the_handover(handover: Handover) -> None:
    got = handover.socketio
    assert_handed_over_then_resumed([m.get("type", "") for m in got], handover.notes, "socketio")
    assert next(m for m in got if m.get("type") == "session.handover")["resume_token"]
    fin = [m for m in got if m.get("type") == "transcript.final"]
    assert_every_utterance_once([m["segment_id"] for m in fin], [m["text"] for m in fin], "socketio")
    assert got[-1] == {**got[-1], "type": "session.closed", "reason": "end"}


@pytest.mark.browser
def test_the_browser_ui_follows_the_handover(handover: Handover) -> None:
    """The page resumes the same session on another node at once (no back-off, no error on
    screen) and its next finals are whole sentences."""
    from tests.e2e.test_browser import MAX_WER, best_wer

    page = handover.browser
    assert "failed" not in page, page.get("failed")
    assert page["same_session"] and page["handovers"] == 1, page
    assert page["error"] == "", page
    for text in page["finals_after"]:
        assert best_wer(page["expected"], text) <= MAX_WER, page


def test_asrhub_stream_resumes_through_the_handover_and_exits_0(handover: Handover) -> None:
    code, events, err = handover.cli
    assert code == 0, err
    assert err == ""
    assert_handed_over_then_resumed([e["type"] for e in events], handover.notes, "cli")
    fin = [e for e in events if e["type"] == "transcript.final"]
    assert_every_utterance_once([e["segment_id"] for e in fin], [e["text"] for e in fin], "cli")


async def test_asrhub_stream_exits_1_with_one_line_when_its_hub_is_killed(cluster: Cluster) -> None:
    """``asrhub stream`` straight to one node (no balancer), SIGKILLed after the first final:
    nothing can resume the session there, so after ``--resume-timeout`` the command says so on
    one line and exits 1 — not 0 with half a transcript."""
    async with aiohttp.ClientSession() as http:

        async def serving() -> Node | None:
            for node in reversed(cluster.nodes):
                if node.proc is not None and ((await healthz(http, node.url)) or {}).get("status") == "ok":
                    return node
            return None

        node = await until(serving, 120, "a node that serves")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asrhub",
        "stream",
        str(fixture(FILE)),
        "--url",
        f"ws://127.0.0.1:{node.port}/v1/stream",
        "--realtime",
        "--json",
        "--language",
        "en",
        "--resume-timeout",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        seen: list[dict[str, Any]] = []
        while not any(e["type"] == "transcript.final" for e in seen):
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert line, "asrhub stream ended before its first final"
            seen.append(json.loads(line))
        killed_at = time.monotonic()
        node.kill()
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        FIGURES["cli_exit_after_kill_s"] = round(time.monotonic() - killed_at, 2)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        cluster.restart(node)
    lines = err.decode().splitlines()
    assert proc.returncode == 1, (proc.returncode, lines)
    assert len(lines) == 1 and lines[0].startswith("asrhub: transcript incomplete:"), lines
    assert "1 final(s) received" in lines[0], lines
