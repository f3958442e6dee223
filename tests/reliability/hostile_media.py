"""Hostile media for the hostile-media tests, written by PyAV (real encoders and muxers), and the
probes those tests measure with: the hub's peak RSS and the round trip of a live session's pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import aiohttp
import av
import numpy as np

LIVE_CONFIG = {"provider": "none", "audio": {"encoding": "pcm_s16le"}}


class _Sink:
    """A non-seekable output: muxers cannot go back to write a length into the header."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


def flac_silence(seconds: float, rate: int, *, seekable: bool) -> bytes:
    """FLAC of digital silence in the largest blocks (65535 samples: a few bytes each). Seekable:
    STREAMINFO declares the length; not seekable: it declares none."""
    sink: Any = io.BytesIO() if seekable else _Sink()
    with av.open(sink, "w", format="flac") as out:
        stream: Any = out.add_stream("flac", rate=rate, options={"frame_size": "65535"})
        stream.layout, stream.format = "mono", "s16"
        zeros = np.zeros((1, 65535), np.int16)
        total = int(seconds * rate)
        for start in range(0, total, 65535):
            frame = av.AudioFrame.from_ndarray(
                zeros[:, : min(65535, total - start)], format="s16", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return sink.getvalue() if seekable else b"".join(sink.parts)


@cache
def flac_bomb() -> bytes:
    """The issue's file: 0.1 MB of FLAC declaring 96 kHz and 3,500 s of silence."""
    return flac_silence(3500, 96_000, seekable=True)


@cache
def flac_without_length() -> bytes:
    """48 kHz FLAC (within the rate limit) that declares no length and holds 600 s of silence."""
    return flac_silence(600, 48_000, seekable=False)


@cache
def jumping_opus(packets: int = 2000, jump_s: float = 10.0) -> bytes:
    """Ogg/Opus (6 kbit/s, about 37 bytes a packet) whose every packet's timestamp jumps
    ``jump_s`` past the previous one's end: every packet claims that much audio was lost."""
    rate = 48_000
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with av.open(buf, "w", format="ogg") as out:
        stream: Any = out.add_stream("libopus", rate=rate)
        stream.layout, stream.bit_rate = "mono", 6000
        encoded = []
        for i in range(packets):
            noise = (rng.standard_normal(960) * 300).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(noise, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 960
            encoded += list(stream.encode(frame))
        encoded += list(stream.encode(None))
        for k, packet in enumerate(encoded):
            packet.pts = packet.dts = (packet.pts or 0) + round(k * jump_s * rate)
            out.mux(packet)
    return buf.getvalue()


def playlists(url: str) -> dict[str, bytes]:
    """Payloads for FFmpeg's playlist and concat demuxers, pointing at ``url`` (and a file)."""
    return {
        "ffconcat": b"ffconcat version 1.0\nfile 'tests/fixtures/quick_fox.wav'\n",
        "ffconcat-url": f"ffconcat version 1.0\nfile '{url}/a.wav'\n".encode(),
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}/seg.ts\n#EXT-X-ENDLIST\n".encode(),
        "dash": (
            '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
            'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" mediaPresentationDuration="PT10S">'
            '<Period><AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="64000">'
            f"<BaseURL>{url}/a.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>"
        ).encode(),
    }


# ------------------------------------------------------------------ probes


class PeakRss:
    """The highest RSS of a process, sampled every 5 ms on a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._process = psutil.Process(pid)
        self.before = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> float:
        return float(self._process.memory_info().rss) / 1e6

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @property
    def growth(self) -> float:
        return self.peak - self.before

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


@dataclass
class Pings:
    """Round trips of a live session's ``ping`` → ``pong`` (the hub answers on its loop)."""

    rtts: list[float] = field(default_factory=list)

    @property
    def worst_ms(self) -> float:
        return 1000 * max(self.rtts)

    @property
    def p50_ms(self) -> float:
        return 1000 * float(np.percentile(self.rtts, 50))

    def summary(self) -> str:
        return f"{len(self.rtts)} pings, median {self.p50_ms:.1f} ms, worst {self.worst_ms:.1f} ms"


@contextlib.asynccontextmanager
async def live_session(base: str) -> AsyncIterator[Pings]:
    """A live WebSocket session that sends a ping every 20 ms (each after the last pong) for as
    long as the block runs."""
    pings = Pings()
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{base}/v1/stream") as ws:
        await ws.send_json({"type": "session.start", "config": LIVE_CONFIG})
        assert (await ws.receive_json(timeout=30))["type"] == "session.started"
        stop = asyncio.Event()

        async def ping() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                sent = time.perf_counter()
                await ws.send_str(json.dumps({"type": "ping", "id": str(n)}))
                while True:
                    message = await ws.receive_json(timeout=30)
                    if message["type"] == "pong" and message["id"] == str(n):
                        break
                pings.rtts.append(time.perf_counter() - sent)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.02)

        task = asyncio.create_task(ping())
        try:
            yield pings
        finally:
            stop.set()
            await task
            await ws.send_json({"type": "session.end"})


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
