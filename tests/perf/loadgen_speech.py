#!/usr/bin/env python3
"""Speech-heavy load: N WebSocket sessions, each alternating 1 s of speech and 1 s of room tone
at real-time pace (100 ms PCM16 frames at absolute deadlines), a ``ping`` every second.

    python tests/perf/loadgen_speech.py --url ws://127.0.0.1:8080/v1/stream --sessions 1000 \
        --duration 20 --stagger 5

The ping round trip (send ``ping`` → receive ``pong``) is what a client feels of the server's
event loop under this load: every frame of every session passes through the VAD, and speech
starts and ends every second. Prints one JSON object: every ping RTT (ms) of the steady window
(after the last session started), late frames, errors, this process's CPU seconds and the phase
marks (time.monotonic) so a caller can line them up with its samples of the server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from common import RATE

from tests import audio_utils as au

FRAME_S = 0.1


def speech_cycle() -> bytes:
    """2 s of PCM16: 1 s of a fixture's speech, then 1 s of -70 dBFS room tone."""
    clip, rate = au.load_wav(au.fixture("address_time.wav"))
    assert rate == RATE
    start = int(0.5 * RATE)
    speech = clip[start : start + RATE]
    tone = au.room_noise(1.0, seed=3, level_db=-70.0)
    return au.pcm16_bytes(np.concatenate([speech, tone]).astype(np.float32))


class Client:
    def __init__(self, args: argparse.Namespace, cycle: bytes) -> None:
        self.args = args
        self.cycle = cycle
        self.rtts: list[tuple[float, float]] = []
        self.pings: dict[int, float] = {}
        self.late = 0
        self.frames = 0
        self.error: str | None = None
        self.started = asyncio.Event()
        self.speech_events = 0

    async def _reader(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            now = time.monotonic()
            ev = json.loads(msg.data)
            kind = ev.get("type")
            if kind == "pong":
                sent = self.pings.pop(ev.get("id"), None)
                if sent is not None:
                    self.rtts.append((sent, 1000 * (now - sent)))
            elif kind == "session.started":
                self.started.set()
            elif kind in ("vad.speech_started", "vad.speech_ended"):
                self.speech_events += 1
            elif kind == "error" and self.error is None:
                self.error = f"{ev.get('code')}: {ev.get('message')}"
        self.started.set()

    async def run(self, http: aiohttp.ClientSession, start_at: float, stop_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        frame_bytes = int(RATE * FRAME_S) * 2
        try:
            async with http.ws_connect(self.args.url, max_msg_size=0, heartbeat=None) as ws:
                reader = asyncio.create_task(self._reader(ws))
                config = {"provider": "none", "vad": {"silence_ms": 300}}
                await ws.send_str(json.dumps({"type": "session.start", "config": config}))
                await asyncio.wait_for(self.started.wait(), 60)
                if self.error or ws.closed:
                    self.error = self.error or "closed before session.started"
                    return
                t0 = time.monotonic()
                k = 0
                while True:
                    deadline = t0 + k * FRAME_S
                    if deadline >= stop_at:
                        break
                    delay = deadline - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif -delay > FRAME_S:
                        self.late += 1
                    off = (k * frame_bytes) % len(self.cycle)
                    await ws.send_bytes(self.cycle[off : off + frame_bytes])
                    self.frames += 1
                    if k % 10 == 5:
                        self.pings[k] = time.monotonic()
                        await ws.send_str(json.dumps({"type": "ping", "id": k}))
                    k += 1
                await ws.send_str('{"type": "session.end"}')
                await asyncio.wait_for(reader, 30)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    cycle = speech_cycle()
    clients = [Client(args, cycle) for _ in range(args.sessions)]
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    t_start = time.monotonic() + 0.5
    t_all_started = t_start + args.stagger
    t_stop = t_all_started + args.duration
    step = args.stagger / max(1, args.sessions - 1)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(c.run(http, t_start + i * step, t_stop) for i, c in enumerate(clients)))
    steady = [rtt for c in clients for sent, rtt in c.rtts if t_all_started + 1.0 <= sent <= t_stop]
    return {
        "sessions": args.sessions,
        "t_start": t_start,
        "t_all_started": t_all_started,
        "t_stop": t_stop,
        "t_end": time.monotonic(),
        "rtts": steady,
        "lost_pongs": sum(len(c.pings) for c in clients),
        "late": sum(c.late for c in clients),
        "frames": sum(c.frames for c in clients),
        "errors": [c.error for c in clients if c.error][:5],
        "error_count": sum(1 for c in clients if c.error),
        "speech_events": sum(c.speech_events for c in clients),
        "cpu_s": time.process_time(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument(
        "--duration", type=float, default=20.0, help="seconds of steady load after the last start"
    )
    ap.add_argument("--stagger", type=float, default=5.0, help="spread session starts over this many seconds")
    args = ap.parse_args()
    # The round trip must measure the server, not this process: with 2000 sessions a young-
    # generation collection here stopped the loop for ~5 ms every ~0.33 s (and a burst of
    # frames followed), the same whichever server it measured. No cyclic garbage is collected
    # while the load runs (a run is seconds long; what it makes is freed by reference counting).
    gc.collect()
    gc.freeze()
    gc.disable()
    sys.stdout.write(json.dumps(asyncio.run(main_async(args))) + "\n")


if __name__ == "__main__":
    main()
