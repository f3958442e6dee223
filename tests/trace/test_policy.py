"""Who is recorded, the bounds of a trace, a session closed without ``session.end``, and the
Redis store — on an in-process hub (provider ``none``: the VAD's events are the session's
events, so no engine is loaded), with a real ``redis-server`` for the cluster store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asrhub.api import open_hub
from asrhub.errors import HubError
from asrhub.hub import Hub
from asrhub.settings.schema import ClusterSettings, Settings, TraceSettings
from asrhub.trace import records
from asrhub.trace.recorder import Tracer
from asrhub.trace.replay import load, replay
from asrhub.wiring import build_pipeline
from tests.cluster.conftest import Redis, redis_server  # noqa: F401  (a fixture)
from tests.transports.conftest import frames, speech

QUIET = b"\0\0" * 16_000


def settings(**trace: Any) -> Settings:
    return Settings(default_provider="none", trace=TraceSettings(**trace))


async def run(hub: Hub, config: dict[str, Any], *, key: str | None = None, end: bool = True) -> str:
    pcm, _ = speech("quick_fox.wav")
    session = await hub.open_async(config, key=key)
    for chunk in frames(pcm + QUIET):
        await session.feed(chunk)
    if end:
        await session.end()
    else:
        session.close("disconnected")
    tracing = hub.tracing
    assert isinstance(tracing, Tracer)
    await tracing.flushed()
    return session.id


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "traces"


async def test_a_hub_without_a_store_refuses_trace() -> None:
    async with open_hub(settings()) as hub:
        assert hub.tracing is None
        with pytest.raises(HubError) as refused:
            await hub.open_async({"trace": True})
        assert refused.value.code == "bad_message" and "trace.dir" in refused.value.message
        assert not hub.sessions


async def test_sample_rate_records_sessions_that_did_not_ask(folder: Path) -> None:
    async with open_hub(settings(dir=str(folder), sample_rate=1.0)) as hub:
        session_id = await run(hub, {})
    trace = load((folder / f"{session_id}.trace").read_bytes())
    assert trace.header.config["trace"] is False and trace.ended
    assert [json.loads(e.json)["type"] for e in trace.events] == [
        "vad.speech_started",
        "vad.speech_ended",
        "session.closed",
    ]
    assert (await replay(trace, build_pipeline))[1:] == [e.json for e in trace.events]
    assert (folder / f"{session_id}.trace").stat().st_mode & 0o077 == 0  # audio: the hub's user only


async def test_a_trace_stops_at_its_bound_and_says_so(folder: Path) -> None:
    async with open_hub(settings(dir=str(folder), max_bytes=64 * 1024)) as hub:
        session_id = await run(hub, {"trace": True})
    data = (folder / f"{session_id}.trace").read_bytes()
    assert len(data) < 64 * 1024 + 4096  # the bound, plus the closing records
    trace = load(data)
    assert trace.truncated is not None and "trace.max_bytes" in trace.truncated.reason
    assert trace.closed is not None and trace.closed.reason == "end"
    assert 0 < len(trace.audio()) < 64 * 1024
    lines = await replay(trace, build_pipeline)  # the part it holds, then the recorded close
    assert json.loads(lines[0])["type"] == "session.started"
    assert json.loads(lines[-1]) == {"type": "session.closed", "reason": "end"}


async def test_a_dropped_session_replays_up_to_where_it_stopped(folder: Path) -> None:
    async with open_hub(settings(dir=str(folder))) as hub:
        session_id = await run(hub, {"trace": True}, end=False)
    trace = load((folder / f"{session_id}.trace").read_bytes())
    assert not trace.ended and trace.closed is not None and trace.closed.reason == "disconnected"
    recorded = [e.json for e in trace.events]
    assert json.loads(recorded[-1]) == {"type": "session.closed", "reason": "disconnected"}
    assert (await replay(trace, build_pipeline))[1:] == recorded


async def test_traces_in_redis_expire_and_serve_only_their_key(redis_server: Redis) -> None:  # noqa: F811
    cluster = ClusterSettings(redis_url=redis_server.url, key_prefix="tracetest")
    config = Settings(default_provider="none", cluster=cluster, trace=TraceSettings(redis=True, ttl_s=30.0))
    async with open_hub(config) as hub:
        session_id = await run(hub, {"trace": True}, key="key-a")
        tracing = hub.tracing
        assert isinstance(tracing, Tracer)
        data = await tracing.read(session_id, "key-a")
        assert data is not None and records.header_of(data).session_id == session_id
        assert await tracing.read(session_id, "key-b") is None
        assert await tracing.read(session_id, None) is None
        assert await tracing.read("../" + session_id, "key-a") is None
        ttl = await tracing.store.redis.pttl(f"tracetest:trace:{session_id}")  # type: ignore[attr-defined]
        assert 0 < ttl <= 30_000


async def test_at_most_max_open_sessions_are_recorded_at_once(folder: Path) -> None:
    async with open_hub(settings(dir=str(folder), max_open=1, sample_rate=1.0)) as hub:
        first = await hub.open_async({"trace": True})
        sampled = await hub.open_async({})  # the sample rate picks it, but the bound is reached
        assert sampled.ctx.trace is None and first.ctx.trace is not None
        with pytest.raises(HubError) as refused:
            await hub.open_async({"trace": True})
        assert refused.value.code == "capacity" and "at most 1" in refused.value.message
        assert len(hub.sessions) == 2
        await first.end()
        again = await hub.open_async({"trace": True})  # its close freed the place
        assert again.ctx.trace is not None
        sampled.close()
        again.close()


def test_trace_redis_needs_the_cluster_redis() -> None:
    from asrhub.settings.loader import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"trace\.redis = true needs cluster\.redis_url"):
        load_settings(env={"ASRHUB_TRACE__REDIS": "true"})
    loaded = load_settings(env={"ASRHUB_TRACE__DIR": "/tmp/t", "ASRHUB_TRACE__SAMPLE_RATE": "0.25"})
    assert loaded.trace.dir == "/tmp/t" and loaded.trace.sample_rate == 0.25


def test_a_trace_is_named_only_by_a_session_id(tmp_path: Path) -> None:
    from asrhub.trace.store import SESSION_ID, DirStore

    store = DirStore(tmp_path)
    assert store.path("Ab3_-x").name == "Ab3_-x.trace"
    assert store.path("Ab3_-x.w2").name == "Ab3_-x.w2.trace"  # an HTTP session under --workers N
    for bad in ("..", "../x", "a/b", ".hidden", "a..b", "a.b.c", ""):
        assert not SESSION_ID.match(bad)
        with pytest.raises(ValueError):
            store.path(bad)
