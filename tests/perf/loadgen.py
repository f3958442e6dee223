#!/usr/bin/env python3
"""Load generator: N WebSocket clients speaking the wire contract, in a process of its own.

    python tests/perf/loadgen.py --url ws://127.0.0.1:8080/v1/stream --sessions 1000 \
        --config '{"provider": "none"}' --mode stream --pace realtime

Modes:

``stream``  each session sends ``session.start``, then a fixture utterance framed by room tone as
            16 kHz PCM16 in ``--frame-ms`` frames, then ``session.end``, and waits for
            ``session.closed``. ``--pace realtime`` schedules frame k of a session at
            ``t0 + k·frame`` (absolute deadlines, so a late frame does not delay the next);
            ``--pace fast`` sends as fast as the server takes them (awaiting each send).
            Session starts are spread evenly over ``--stagger`` seconds.
``idle``    each session sends ``session.start`` and then nothing for ``--hold`` seconds.
``cycles``  ``--sessions`` open → started → end → closed cycles, ``--concurrency`` at a time.

Prints one JSON object on stdout: per-session measurements (latencies in ms against the wall time
the client sent the frame holding the relevant stream instant) and time.monotonic() marks of the
phases, so the caller can line them up with its samples of the server process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RATE, stream_audio


class Client:
    def __init__(self, index: int, args: argparse.Namespace, pcm: bytes, frame_bytes: int) -> None:
        self.index = index
        self.args = args
        self.pcm = pcm
        self.frame_bytes = frame_bytes
        self.sent_at: list[float] = []
        self.late = 0
        self.max_lag = 0.0
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.error: str | None = None
        self.started = asyncio.Event()
        self.closed = asyncio.Event()
        self.t_first: float = math.nan
        self.t_closed: float = math.nan

    async def _reader(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                now = time.monotonic()
                ev = json.loads(msg.data)
                self.events.append((now, ev))
                kind = ev.get("type")
                if kind == "session.started":
                    self.started.set()
                elif kind == "session.closed":
                    self.t_closed = now
                    self.closed.set()
                elif kind == "error" and self.error is None:
                    self.error = f"{ev.get('code')}: {ev.get('message')}"
            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
        self.started.set()
        self.closed.set()

    async def run(self, http: aiohttp.ClientSession, start_at: float) -> None:
        args = self.args
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        try:
            async with http.ws_connect(args.url, max_msg_size=0, heartbeat=None) as ws:
                reader = asyncio.create_task(self._reader(ws))
                await ws.send_str(json.dumps({"type": "session.start", "config": json.loads(args.config)}))
                await asyncio.wait_for(self.started.wait(), args.timeout)
                if self.error is not None or ws.closed:
                    self.error = self.error or "closed before session.started"
                    return
                if args.mode == "stream":
                    await self._stream(ws)
                    await ws.send_str('{"type": "session.end"}')
                elif args.mode == "idle":
                    await asyncio.sleep(max(0.0, args.hold_until - time.monotonic()))
                    await ws.send_str('{"type": "session.end"}')
                else:  # cycles
                    await ws.send_str('{"type": "session.end"}')
                await asyncio.wait_for(self.closed.wait(), args.timeout)
                reader.cancel()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.error = self.error or f"{type(exc).__name__}: {exc}"

    async def _stream(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        fb = self.frame_bytes
        frame_s = self.args.frame_ms / 1000.0
        realtime = self.args.pace == "realtime"
        t0 = time.monotonic()
        self.t_first = t0
        for k, off in enumerate(range(0, len(self.pcm), fb)):
            if realtime:
                deadline = t0 + k * frame_s
                delay = deadline - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag = time.monotonic() - deadline
                if lag > frame_s:
                    self.late += 1
                self.max_lag = max(self.max_lag, lag)
            self.sent_at.append(time.monotonic())
            await ws.send_bytes(self.pcm[off : off + fb])
            if self.closed.is_set():
                self.error = self.error or "closed while streaming"
                return

    def frame_sent_at(self, stream_s: float) -> float:
        k = int(stream_s * RATE * 2) // self.frame_bytes
        if 0 <= k < len(self.sent_at):
            return self.sent_at[k]
        return math.nan

    def summary(
        self, utterances: list[tuple[float, float]], hangover_s: float, ended_offset_s: float
    ) -> dict[str, Any]:
        speech_end_s = utterances[-1][1]

        def true_end(start: Any, end: Any) -> float:
            """End of the fixture utterance a final belongs to (the one its span overlaps most)."""
            if not isinstance(start, (int, float)) or not isinstance(end, (int, float)):
                return speech_end_s
            return max(utterances, key=lambda u: min(u[1], end) - max(u[0], start))[1]

        ended = [(r, e) for r, e in self.events if e.get("type") == "vad.speech_ended"]
        finals = [(r, e) for r, e in self.events if e.get("type") == "transcript.final"]
        out: dict[str, Any] = {
            "error": self.error,
            "frames": len(self.sent_at),
            "late": self.late,
            "max_lag_ms": 1000 * self.max_lag,
            "t_first": self.t_first,
            "t_closed": self.t_closed,
            "ended": len(ended),
            "finals": [
                {
                    "recv": r,
                    "text": e.get("text", ""),
                    "start": e.get("start"),
                    "end": e.get("end"),
                    "true_end": true_end(e.get("start"), e.get("end")),
                    "e2e_ms": 1000 * (r - self.frame_sent_at(true_end(e.get("start"), e.get("end")))),
                }
                for r, e in finals
            ],
        }
        out["spurious"] = max(0, len(ended) - 1)
        if ended:
            # the speech_ended of the utterance: the one nearest true end + hangover
            r, e = min(
                ended,
                key=lambda re: abs(float(re[1].get("t", 0.0)) + ended_offset_s - speech_end_s - hangover_s),
            )
            t = float(e.get("t", math.nan))
            out["ended_t"] = t
            out["ended_recv"] = r
            # beyond the hangover: against the frame holding true end + silence_ms
            out["lat_audio_ms"] = 1000 * (r - self.frame_sent_at(speech_end_s + hangover_s))
            # pure processing: against the frame holding the instant the VAD decided
            out["lat_proc_ms"] = 1000 * (r - self.frame_sent_at(t + ended_offset_s))
        return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    audio = stream_audio(args.fixture, lead_s=args.lead, tail_s=args.tail, gap_s=args.gap)
    frame_bytes = int(RATE * args.frame_ms / 1000) * 2
    clients = [Client(i, args, audio.pcm, frame_bytes) for i in range(args.sessions)]
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=args.timeout)
    t_start = time.monotonic() + 0.2
    args.hold_until = t_start + args.stagger + args.hold
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        if args.mode == "cycles":
            sem = asyncio.Semaphore(args.concurrency)

            async def one(c: Client) -> None:
                async with sem:
                    await c.run(http, 0.0)

            await asyncio.gather(*(one(c) for c in clients))
        else:
            step = args.stagger / max(1, args.sessions - 1) if args.sessions > 1 else 0.0
            await asyncio.gather(*(c.run(http, t_start + i * step) for i, c in enumerate(clients)))
    t_end = time.monotonic()
    hangover = args.hangover_ms / 1000.0
    return {
        "mode": args.mode,
        "sessions": args.sessions,
        "t_start": t_start,
        "t_all_started": t_start + args.stagger,
        "t_end": t_end,
        "audio_s": audio.duration_s,
        "speech_end_s": audio.speech_end_s,
        "speech_s": audio.speech_s,
        "utterances": audio.utterances,
        "hangover_s": hangover,
        "cpu_s": time.process_time(),
        "clients": [
            c.summary(list(audio.utterances), hangover, args.ended_offset_ms / 1000.0) for c in clients
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--mode", choices=("stream", "idle", "cycles"), default="stream")
    ap.add_argument("--pace", choices=("realtime", "fast"), default="realtime")
    ap.add_argument("--stagger", type=float, default=2.0, help="spread session starts over this many seconds")
    ap.add_argument("--config", default='{"provider": "none"}', help="session.start config (JSON)")
    ap.add_argument("--fixture", default="quick_fox.wav", help="fixture, comma-separated list, or 'all'")
    ap.add_argument("--gap", type=float, default=0.6, help="room tone between listed fixtures (s)")
    ap.add_argument("--lead", type=float, default=1.0, help="room tone before the utterance (s)")
    ap.add_argument("--tail", type=float, default=1.2, help="room tone after the utterance (s)")
    ap.add_argument("--frame-ms", type=int, default=100)
    ap.add_argument("--hangover-ms", type=float, default=500.0, help="the VAD's silence_ms")
    ap.add_argument(
        "--ended-offset-ms",
        type=float,
        default=None,
        help="add to vad.speech_ended's t to get the instant the VAD decided (default: --hangover-ms, "
        "as vad_gate's t is the end of the last voiced frame)",
    )
    ap.add_argument("--hold", type=float, default=3.0, help="idle mode: seconds to hold after the last start")
    ap.add_argument("--concurrency", type=int, default=50, help="cycles mode: sessions at a time")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    if args.ended_offset_ms is None:
        args.ended_offset_ms = args.hangover_ms
    return args


def main() -> None:
    args = parse_args()
    result = asyncio.run(main_async(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
