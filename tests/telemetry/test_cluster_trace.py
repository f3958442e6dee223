"""One utterance's spans form one tree across two hub nodes, Redis resume and a Ray replica.

Real parts: redis-server, a one-node Ray cluster on 127.0.0.1 (one whisper replica, shared by
both hubs through ``ray_name``), two hubs (in-process, each its own aiohttp server and event
loop) sharing Redis, a raw WebSocket client that sends a W3C ``traceparent`` in its handshake,
the OpenTelemetry SDK with its OTLP/HTTP exporter, and an OTLP receiver (tests/telemetry/
collector.py) that gets the hubs' spans and the replica's (exported from the Ray worker
process). The client runs utterance 1 on node A, vanishes, resumes on node B and runs
utterance 2 there; every span has the client's trace id and the parents chain up to it::

    client ─ session(A) ─┬─ utterance 1 ─ engine.call ─ whisper.replica
                         └─ resume(B) ─ session(B) ─ utterance 2 ─ engine.call ─ whisper.replica

Ray costs ~13 s to start: one module, one cluster, one scenario read by every test.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from asrhub import telemetry
from asrhub.client import read_audio_file
from asrhub.settings.schema import ClusterSettings, TelemetrySettings
from asrhub.telemetry.setup import flush
from tests.audio_utils import fixture, fixture_entry
from tests.cluster.conftest import redis_server  # noqa: F401 (a fixture)
from tests.ray_cluster import loopback_cluster
from tests.reliability.harness import RawWS
from tests.transports.conftest import ServerThread, make_settings

from .collector import Collector, Received

TRACE_ID = secrets.token_hex(16)
CLIENT_SPAN = secrets.token_hex(8)


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    # the replica (started with this environment) exports soon
    with loopback_cluster(env={"OTEL_BSP_SCHEDULE_DELAY": "200"}) as (c, _):
        yield c.address


@dataclass
class Scenario:
    spans: list[Received]
    finals: list[dict[str, Any]]


@pytest.fixture(scope="module")
def scenario(ray_address: str, redis_server: Any) -> Iterator[Scenario]:  # noqa: F811
    with Collector() as collector:
        settings = make_settings(
            keys=(),
            cluster=ClusterSettings(redis_url=redis_server.url),
            telemetry=TelemetrySettings(
                enabled=True, endpoint=collector.endpoint, service_name="asrhub-test"
            ),
            providers={"whisper": {"ray_address": ray_address, "ray_replicas": 1, "ray_name": "otel"}},
        )
        telemetry.install(settings.telemetry)  # as `asrhub serve` does, before the hubs
        try:
            with ServerThread(settings) as a, ServerThread(settings) as b:
                finals = asyncio.run(run_client(a.port, b.port))
            flush()
            spans = collector.wait_for(
                lambda s: (
                    sum(x.name == "whisper.replica" for x in s) >= 2
                    and sum(x.name == "session" for x in s) >= 2
                ),
                60,
                "both nodes' and the replica's spans",
            )
            yield Scenario(spans, finals)
        finally:
            telemetry.shutdown()


async def run_client(port_a: int, port_b: int) -> list[dict[str, Any]]:
    """Utterance 1 on node A, vanish, resume on node B, the rest there."""
    pcm, audio = read_audio_file(fixture("silences.wav"))
    segments = fixture_entry("silences.wav")["segments"]
    bps = audio["sample_rate"] * 2
    headers = {"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    ws = await RawWS.connect(port_a, headers=headers)
    await ws.send_json(
        {
            "type": "session.start",
            "config": {"language": "en", "audio": audio, "partials": False},
            "resume": True,
        }
    )
    started = await ws.recv_json()
    assert started["type"] == "session.started", started
    cut = int((segments[1]["start"] + 1.0) * bps) // 2 * 2
    for off in range(0, cut, 3200):
        await ws.send_bytes(pcm[off : min(off + 3200, cut)])
    seen = await ws.events_until(lambda e: e["type"] == "transcript.final", within=60)
    first = [e for e in seen if e["type"] == "transcript.final"]
    ws.reset()
    ws.writer.close()

    ws2 = await RawWS.connect(port_b)  # no traceparent: the trace comes from Redis
    confirmed = int(first[0]["end"] * bps) // 2 * 2
    await ws2.send_json(
        {
            "type": "session.resume",
            "token": started["resume_token"],
            "last_segment_id": 1,
            "audio_from_bytes": confirmed,
        }
    )
    resumed = await ws2.recv_json()
    assert resumed["type"] == "session.resumed", resumed
    end = int((segments[1]["end"] + 1.5) * bps) // 2 * 2  # utterance 2 only: the test stays short
    for off in range(resumed["resume_from_bytes"], end, 3200):
        await ws2.send_bytes(pcm[off : min(off + 3200, end)])
    await ws2.send_json({"type": "session.end"})
    rest = await ws2.events_until(lambda e: e["type"] == "session.closed", within=90)
    await ws2.close()
    return first + [e for e in rest if e["type"] == "transcript.final"]


def test_one_trace_from_the_client_through_both_nodes_and_the_replica(scenario: Scenario) -> None:
    assert [f["segment_id"] for f in scenario.finals] == [1, 2], scenario.finals
    ours = [s for s in scenario.spans if s.trace_id == TRACE_ID]
    by_id = {s.span_id: s for s in ours}
    names = sorted(s.name for s in ours)
    assert names.count("session") == 2 and names.count("resume") == 1, names
    assert names.count("utterance") == 2 and names.count("whisper.replica") == 2, names
    assert names.count("engine.call") == 2, names
    # one tree: every span's parent is in it, up to the client's span
    for span in ours:
        assert span.parent_id == CLIENT_SPAN or span.parent_id in by_id, span

    def chain(span: Received) -> list[str]:
        out = [span.name]
        while span.parent_id in by_id:
            span = by_id[span.parent_id]
            out.append(span.name)
        return out

    replicas = [s for s in ours if s.name == "whisper.replica"]
    chains = sorted(chain(s) for s in replicas)
    assert chains == [
        ["whisper.replica", "engine.call", "utterance", "session"],
        ["whisper.replica", "engine.call", "utterance", "session", "resume", "session"],
    ], chains
    assert {s.service for s in replicas} == {"asrhub-test-ray-replica"}
    assert {s.service for s in ours if s.name != "whisper.replica"} == {"asrhub-test"}
    call = next(s for s in ours if s.name == "engine.call")
    assert call.attributes["asrhub.provider"] == "whisper" and call.attributes["asrhub.attempt"] == 1
    assert call.attributes["asrhub.failover"] is False and call.attributes["asrhub.audio_s"] > 0.5
    sessions = [s for s in ours if s.name == "session"]
    assert len({s.attributes["asrhub.session_id"] for s in sessions}) == 1  # the same session, resumed
