"""/metrics on a real server: a real client streams a WAV over WebSocket, the numbers move."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from asrhub.client import stream
from asrhub.frames import FinalTranscript, SpeechStarted
from asrhub.hub import Hub
from asrhub.settings.schema import Settings
from asrhub.wiring import build_hub, build_pipeline
from tests.audio_utils import fixture, fixture_entry, wer
from tests.ops.conftest import parse_metrics as parse
from tests.ops.conftest import scrape_url as scrape
from tests.ops.conftest import serving


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Hub]]:
    settings = Settings(default_provider="whisper")
    hub = build_hub(settings)
    async with serving(hub, settings) as url:
        yield url, hub


async def test_a_websocket_stream_moves_the_served_metrics(served: tuple[str, Hub]) -> None:
    server_url, hub = served
    ws_url = server_url.replace("http", "ws", 1) + "/v1/stream"
    async with aiohttp.ClientSession() as http:
        before = await scrape(http, server_url)
        events = [
            e
            async for e in stream(ws_url, str(fixture("quick_fox.wav")), config={"language": "en"}, http=http)
        ]
        after = await scrape(http, server_url)

    def moved(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    finals = [e for e in events if isinstance(e, FinalTranscript)]
    assert len(finals) == 1 and wer(fixture_entry("quick_fox.wav")["text"], finals[0].text) < 0.2
    assert moved("asrhub_sessions_opened_total", transport="websocket") == 1
    assert moved("asrhub_sessions_closed_total", transport="websocket", reason="end") == 1
    assert moved("asrhub_audio_frames_in_total", transport="websocket") >= 30  # 3.35 s in 100 ms frames
    assert moved("asrhub_audio_bytes_in_total", transport="websocket") >= 3.3 * 16_000 * 2
    assert moved("asrhub_events_out_total", type="transcript.final") == 1
    assert moved("asrhub_events_out_total", type="vad.speech_started") == sum(
        isinstance(e, SpeechStarted) for e in events
    )
    assert moved("asrhub_provider_latency_seconds_count", provider="whisper") == 1
    assert 0 < moved("asrhub_provider_latency_seconds_sum", provider="whisper") < 30
    assert moved("asrhub_inference_seconds_count", pool="whisper") >= 1
    assert after[("asrhub_sessions_active", frozenset({("transport", "websocket")}))] == 0
    assert ("asrhub_inference_queue_depth", frozenset({("pool", "whisper")})) in after
    # A second hub of the process built on the same provider object shares its engine: it
    # reports the pool whole (the engine's numbers, whoever asked), but none of the sessions.
    twin = Hub(providers=hub.providers, pipeline_factory=build_pipeline)
    seen = parse(twin.metrics.render()[0].decode())
    pool_calls = ("asrhub_inference_seconds_count", frozenset({("pool", "whisper")}))
    assert seen[pool_calls] >= after[pool_calls] >= 1
    assert ("asrhub_inference_busy", frozenset({("pool", "whisper")})) in seen
    assert not [k for k in seen if k[0].startswith("asrhub_sessions_opened")]
    assert not [k for k in seen if k[0] == "asrhub_provider_latency_seconds_count"]


async def test_a_scraper_gets_the_format_its_accept_header_asks_for(served: tuple[str, Hub]) -> None:
    """Prometheus asks for OpenMetrics first (its default scrape Accept header); curl and
    older scrapers get the text format 0.0.4."""
    server_url, _hub = served
    prometheus = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    async with aiohttp.ClientSession() as http:
        async with http.get(server_url + "/metrics", headers={"Accept": prometheus}) as resp:
            open_metrics, om_type = await resp.text(), resp.headers["Content-Type"]
        async with http.get(server_url + "/metrics", headers={"Accept": "*/*"}) as resp:
            text, text_type = await resp.text(), resp.headers["Content-Type"]
    assert om_type.startswith("application/openmetrics-text") and open_metrics.rstrip().endswith("# EOF")
    assert "# TYPE asrhub_sessions_opened counter" in open_metrics
    assert text_type.startswith("text/plain") and "# EOF" not in text
    assert "# TYPE asrhub_sessions_opened_total counter" in text
