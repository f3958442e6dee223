"""Hostile media against ``asrhub serve`` (issue 23, items 3-5): decoder bombs, playlists and
concat scripts, timestamp-jumping streams and bottomless multipart uploads, each written by the
test (PyAV's real encoders and muxers) and sent by a real client.

For every case: a clear error in the protocol's shape, the hub's peak RSS growth under a stated
bound (printed with the figures), the round trip of a live session's pings under 100 ms while
the hostile request runs, and afterwards no session, decoder thread, upload or asyncio task
left."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import aiohttp
import pytest

from .harness import ServeProcess, metric_sum, parse_metrics
from .hostile_media import (
    PeakRss,
    chunked,
    flac_bomb,
    flac_without_length,
    jumping_opus,
    live_session,
    playlists,
)

MAX_UPLOAD_S = 120
SETTINGS = (f"limits.max_upload_s={MAX_UPLOAD_S}", "limits.idle_timeout_s=20")
LAG_BOUND_MS = 100.0
BOMB_RSS_MB = 64.0
"""A refused bomb: the upload, PyAV's buffers and at most ``MAX_UPLOAD_S`` of 16 kHz samples
(7.7 MB); the old decoder took +4.3 GB for the FLAC bomb."""
STREAM_RSS_MB = 32.0
FORM_RSS_MB = 32.0
"""At most ``server.max_upload_bytes`` + 512 KB is read, and a form's fields hold 256 KB."""


@pytest.fixture(scope="module")
def hub() -> Iterator[ServeProcess]:
    with ServeProcess(*SETTINGS) as proc:
        yield proc


async def scrape(proc: ServeProcess) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{proc.http}/metrics") as response:
        return parse_metrics(await response.text())


LEFT = ("asrhub_sessions_active", "asrhub_decoder_threads", "asrhub_uploads")


async def settled(proc: ServeProcess, tasks: float | None = None, within: float = 30.0) -> dict[str, float]:
    """/metrics once no session, decoder thread or upload is left and no more asyncio tasks than
    ``tasks`` run (or the last scrape, after ``within`` seconds: a leak, not a slow machine)."""
    deadline = time.monotonic() + within
    while True:
        metrics = await scrape(proc)
        left = sum(metric_sum(metrics, name) for name in LEFT)
        extra = tasks is not None and metrics["asrhub_event_loop_tasks"] > tasks
        if (not left and not extra) or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.1)


def assert_nothing_left(metrics: dict[str, float], tasks: float) -> None:
    for name in LEFT:
        assert metric_sum(metrics, name) == 0, name
    assert metrics["asrhub_event_loop_tasks"] <= tasks


async def post(base: str, path: str, data: Any, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.post(f"{base}{path}", data=data, **kwargs) as response,
    ):
        return response.status, await response.json(content_type=None)


# ------------------------------------------------------------------ decoder bombs


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [("flac_96k_3500s", 400, "bad_audio"), ("flac_no_length_600s", 413, "too_large")],
)
async def test_a_decoder_bomb_is_refused_in_bounded_memory(
    hub: ServeProcess, figures: Any, name: str, status: int, code: str
) -> None:
    """0.1 MB of FLAC declaring 96 kHz and 3,500 s (over ``limits.max_input_rate``), and 14 KB
    declaring no length with 600 s inside (past ``limits.max_upload_s``, counted while decoding):
    refused with a clear error, the hub's memory barely moves, a live session keeps its pace."""
    data = flac_bomb() if name == "flac_96k_3500s" else flac_without_length()
    tasks = (await settled(hub))["asrhub_event_loop_tasks"]
    async with live_session(hub.http) as pings:
        with PeakRss(hub.proc.pid) as rss:  # type: ignore[union-attr]
            got, body = await post(hub.http, "/v1/transcribe", data)
    figures(f"hostile media: {name} ({len(data)} bytes)", f"RSS +{rss.growth:.1f} MB peak; {pings.summary()}")
    assert got == status and body["code"] == code, body
    assert rss.growth < BOMB_RSS_MB
    assert pings.worst_ms < LAG_BOUND_MS
    assert_nothing_left(await settled(hub, tasks), tasks)


# ------------------------------------------------------------------ playlists and concat scripts


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture(scope="module")
def lure() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that counts the requests a playlist could make."""
    hits: list[str] = []
    handler = type("Lure", (_Counter,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["ffconcat", "ffconcat-url", "hls", "dash"])
async def test_playlists_and_concat_scripts_are_bad_audio_and_fetch_nothing(
    hub: ServeProcess, lure: tuple[str, list[str]], kind: str
) -> None:
    """Encoding ``auto`` (an upload, Deepgram without an encoding, a WebSocket session): FFmpeg
    opens only the documented audio containers, with no protocol at all. Before, an ffconcat
    script naming a WAV file relative to the hub's working directory was transcribed."""
    url, hits = lure
    payload = playlists(url)[kind]
    tasks = (await settled(hub))["asrhub_event_loop_tasks"]
    got, body = await post(hub.http, "/v1/transcribe", payload)
    assert got == 400 and body["code"] == "bad_audio", body  # the old hub transcribed the WAV
    got, body = await post(hub.http, "/v1/listen", payload)  # Deepgram, no encoding: auto
    assert got == 400 and "accepted containers" in body["err_msg"], body
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{hub.http}/v1/stream") as ws:
        await ws.send_json(
            {"type": "session.start", "config": {"provider": "none", "audio": {"encoding": "auto"}}}
        )
        assert (await ws.receive_json(timeout=30))["type"] == "session.started"
        await ws.send_bytes(payload)
        await ws.send_json({"type": "session.end"})
        events = []
        while (event := await ws.receive_json(timeout=30))["type"] != "session.closed":
            events.append(event)
    assert [(e["type"], e["code"]) for e in events] == [("error", "bad_audio")], events
    assert hits == []
    assert_nothing_left(await settled(hub, tasks), tasks)


# ------------------------------------------------------------------ timestamp-jumping stream


async def test_a_timestamp_jumping_stream_cannot_flood_the_loop(hub: ServeProcess, figures: Any) -> None:
    """Ogg/Opus whose every 37-byte packet claims 10 s of lost audio, streamed at 4 KB/s over a
    WebSocket (1,000 s of "lost" audio a second): silence fills at most 10 s per jump and 60 s
    per stream, decoding, resampling and clipping run on the decoder thread, and the loop takes
    at most 1 s of audio per callback. A live session's pings stay fast; the hostile session
    gets ``bad_audio`` errors (at most 5) and nothing is left after it."""
    data = jumping_opus()
    tasks = (await settled(hub))["asrhub_event_loop_tasks"]
    errors: list[dict[str, Any]] = []
    async with live_session(hub.http) as pings:
        with PeakRss(hub.proc.pid) as rss:  # type: ignore[union-attr]
            async with aiohttp.ClientSession() as http, http.ws_connect(f"{hub.http}/v1/stream") as ws:
                await ws.send_json(
                    {"type": "session.start", "config": {"provider": "none", "audio": {"encoding": "ogg"}}}
                )
                assert (await ws.receive_json(timeout=30))["type"] == "session.started"

                async def read() -> None:
                    async for message in ws:
                        event = message.json()
                        if event["type"] == "error":
                            errors.append(event)

                reader = asyncio.create_task(read())
                loop = asyncio.get_running_loop()
                started = loop.time()
                for i, piece in enumerate(chunked(data, 400)):  # 400 bytes every 0.1 s: 4 KB/s
                    await ws.send_bytes(piece)
                    await asyncio.sleep(max(0.0, started + 0.1 * (i + 1) - loop.time()))
                await ws.send_json({"type": "session.end"})
                await asyncio.wait_for(reader, 60)
    figures(
        f"hostile media: jumping Ogg/Opus ({len(data)} bytes at 4 KB/s)",
        f"RSS +{rss.growth:.1f} MB peak; {pings.summary()}; {len(errors)} errors",
    )
    assert errors and {e["code"] for e in errors} == {"bad_audio"} and len(errors) <= 5
    assert not any(e["fatal"] for e in errors)
    assert "missing" in errors[0]["message"]
    assert rss.growth < STREAM_RSS_MB
    assert pings.worst_ms < LAG_BOUND_MS
    assert_nothing_left(await settled(hub, tasks), tasks)


# ------------------------------------------------------------------ bottomless multipart


async def form_fields(boundary: str, fields: int, size: int) -> AsyncIterator[bytes]:
    value = b"x" * size
    for i in range(fields):
        yield (
            (f'--{boundary}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n').encode()
            + value
            + b"\r\n"
        )
    yield f"--{boundary}--\r\n".encode()


async def test_a_chunked_multipart_upload_is_counted_byte_by_byte(hub: ServeProcess, figures: Any) -> None:
    """8,000 form fields of 60 KB, chunked (no Content-Length to check up front): refused with
    ``too_large`` once the fields exceed their bounds, long before 480 MB arrive. Before, every
    field was kept (+493 MB)."""
    tasks = (await settled(hub))["asrhub_event_loop_tasks"]
    boundary = "hostileboundary"
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    async with live_session(hub.http) as pings:
        with PeakRss(hub.proc.pid) as rss:  # type: ignore[union-attr]
            try:
                got, body = await post(
                    hub.http, "/v1/audio/transcriptions", form_fields(boundary, 8000, 60_000), headers=headers
                )
            except aiohttp.ClientError as exc:  # the hub may close while the body is still being sent
                got, body = 0, {"error": repr(exc)}
    figures(
        "hostile media: 8,000 chunked form fields of 60 KB",
        f"RSS +{rss.growth:.1f} MB peak; {pings.summary()}",
    )
    assert got == 413 and body["error"]["code"] == "too_large", body
    assert rss.growth < FORM_RSS_MB
    assert pings.worst_ms < LAG_BOUND_MS
    assert_nothing_left(await settled(hub, tasks), tasks)
