"""Two hubs in one process (an application embedding the hub, a test) keep their own metrics:
traffic on one never shows on the other's /metrics, and closing one leaves nothing behind in
the other. Real servers on 127.0.0.1, a real WebSocket client, the real VAD chain."""

from __future__ import annotations

import aiohttp

from asrhub.client import stream
from asrhub.engine.engine_subject import EngineSubject
from asrhub.frames import SessionClosed, SpeechStarted
from asrhub.settings.schema import Settings
from asrhub.wiring import build_hub
from tests.audio_utils import fixture
from tests.ops.conftest import Samples, serving
from tests.ops.conftest import scrape_url as scrape

LOOP_WIDE = {"asrhub_event_loop_tasks"}
"""The one asrhub_ series that is not a hub's own: the tasks of the loop both hubs run on."""


def own(samples: Samples) -> Samples:
    """A hub's own series: every asrhub_ sample but the loop-wide one."""
    return {k: v for k, v in samples.items() if k[0].startswith("asrhub_") and k[0] not in LOOP_WIDE}


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_two_hubs_in_one_process_do_not_mix_their_metrics() -> None:
    settings = Settings(default_provider="none")
    hub_a, hub_b = build_hub(settings), build_hub(settings)
    async with aiohttp.ClientSession() as http, serving(hub_b, settings) as url_b:
        b_before = own(await scrape(http, url_b))
        async with serving(hub_a, settings) as url_a:
            events = [
                e
                async for e in stream(
                    url_a.replace("http", "ws", 1) + "/v1/stream",
                    str(fixture("silences.wav")),
                    config={"provider": "none"},
                    http=http,
                )
            ]
            assert any(isinstance(e, SpeechStarted) for e in events)
            assert isinstance(events[-1], SessionClosed)
            held = hub_a.open({"provider": "none"}, transport="held-on-a")  # open during the scrapes
            a = await scrape(http, url_a)
            b = await scrape(http, url_b)
            held.close()
        b_after_a_closed = own(await scrape(http, url_b))

    # hub A counted its own traffic ...
    assert get(a, "asrhub_sessions_opened_total", transport="websocket") == 1
    assert get(a, "asrhub_sessions_closed_total", transport="websocket", reason="end") == 1
    assert get(a, "asrhub_audio_frames_in_total", transport="websocket") > 0
    assert get(a, "asrhub_events_out_total", type="vad.speech_started") == sum(
        isinstance(e, SpeechStarted) for e in events
    )
    assert get(a, "asrhub_sessions_active", transport="held-on-a") == 1
    # ... and hub B saw none of it, not while A served, not after A closed
    assert own(b) == b_before, "hub B's /metrics moved with hub A's traffic"
    assert ("asrhub_sessions_active", frozenset({("transport", "held-on-a")})) not in b
    assert b_after_a_closed == b_before, "closing hub A changed hub B's /metrics"
    assert get(b, "asrhub_audio_frames_in_total", transport="websocket") == 0


async def test_a_pool_is_reported_by_the_hubs_whose_providers_use_it() -> None:
    """A pool belongs to its provider: a hub reports the pools of its own providers (and those
    tracked by hand), never another hub's."""
    settings = Settings(default_provider="none")
    hub_a, hub_b = build_hub(settings), build_hub(settings)

    async def engine(payloads: list[int], partial: bool) -> list[int]:
        return payloads

    pool: EngineSubject[int, int] = EngineSubject("only-on-a", engine)
    try:
        hub_a.metrics.track_pool(pool)
        running = pool.try_submit(1)  # started: the engine was idle
        assert running is not None
        assert pool.try_submit(2) is None  # shed: its one partial lane is busy
        body_a, _ = hub_a.metrics.render()
        body_b, _ = hub_b.metrics.render()
        assert b'asrhub_inference_busy{pool="only-on-a"} 1.0' in body_a.splitlines()
        assert b'asrhub_drops_total{reason="partial_shed"} 1.0' in body_a.splitlines()
        assert b"only-on-a" not in body_b and b"partial_shed" not in body_b
        assert await running == 1
    finally:
        pool.shutdown()
        await hub_a.shutdown(grace_s=1.0)
        await hub_b.shutdown(grace_s=1.0)
