#!/usr/bin/env python3
"""The bare baseline: an aiohttp WebSocket server doing the hub's VAD work with no pipeline.

    python tests/perf/bare_vad_server.py --port 8090

Speaks just enough of the wire contract for the load generator: ``session.start`` (reads
``config.vad``) → ``session.started``; binary PCM16 16 kHz frames, re-framed to 20 ms webrtcvad
frames; ``vad.speech_started`` / ``vad.speech_ended`` by the rule of operators/vad_gate.py
(``t`` of the end = end of the last voiced frame, decided ``silence_ms`` later);
``session.end`` → ``session.closed``. No decode, resample, pre-roll or event objects: the same
rule, settings and framing as the hub's ``vad_gate`` operator, as plain code on the event loop,
the floor against which the reactive pipeline's overhead is measured.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import webrtcvad
from aiohttp import WSMsgType, web

RATE = 16_000
FRAME_MS = 20
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2


class VadState:
    """The vad_gate rule: start on k voiced frames in a window of max(k + 2, 1.5 k); end after
    ``silence_ms`` of consecutive unvoiced frames, ``t`` = end of the last voiced frame."""

    __slots__ = (
        "buf",
        "end_frames",
        "hist",
        "k",
        "last_voiced",
        "mask",
        "samples",
        "speaking",
        "unvoiced",
        "vad",
    )

    def __init__(self, aggressiveness: int, start_ms: int, silence_ms: int) -> None:
        self.vad = webrtcvad.Vad(aggressiveness)
        self.buf = bytearray()
        self.samples = 0
        self.speaking = False
        self.k = max(1, math.ceil(start_ms / FRAME_MS))
        self.mask = (1 << max(self.k + 2, math.ceil(1.5 * self.k))) - 1
        self.end_frames = max(1, math.ceil(silence_ms / FRAME_MS))
        self.hist = self.unvoiced = self.last_voiced = 0

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self.buf += data
        events: list[dict[str, Any]] = []
        buf, flen = self.buf, FRAME_BYTES // 2
        n = len(buf) // FRAME_BYTES
        mv = memoryview(buf)
        for i in range(n):
            voiced = self.vad.is_speech(mv[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], RATE)
            self.samples += flen
            if not self.speaking:
                self.hist = ((self.hist << 1) | voiced) & self.mask
                if self.hist.bit_count() >= self.k:
                    self.speaking, self.unvoiced, self.last_voiced = True, 0, self.samples
                    t = (self.samples - self.hist.bit_length() * flen) / RATE
                    events.append({"type": "vad.speech_started", "t": t})
            elif voiced:
                self.unvoiced, self.last_voiced = 0, self.samples
            else:
                self.unvoiced += 1
                if self.unvoiced >= self.end_frames:
                    self.speaking, self.hist = False, 0
                    events.append({"type": "vad.speech_ended", "t": self.last_voiced / RATE})
        mv.release()
        del buf[: n * FRAME_BYTES]
        return events


async def handle(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    state: VadState | None = None
    async for msg in ws:
        if msg.type is WSMsgType.BINARY:
            if state is None:
                await ws.send_str(
                    json.dumps(
                        {"type": "error", "code": "bad_message", "message": "no session", "fatal": True}
                    )
                )
                break
            for event in state.feed(msg.data):
                await ws.send_str(json.dumps(event))
        elif msg.type is WSMsgType.TEXT:
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "session.start":
                vad = (data.get("config") or {}).get("vad") or {}
                state = VadState(
                    int(vad.get("aggressiveness", 2)),
                    int(vad.get("start_ms", 90)),
                    int(vad.get("silence_ms", 500)),
                )
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "session.started",
                            "session_id": str(id(state)),
                            "config": data.get("config") or {},
                        }
                    )
                )
            elif kind == "session.end":
                await ws.send_str(json.dumps({"type": "session.closed", "reason": "end"}))
                break
            elif kind == "ping":
                await ws.send_str(json.dumps({"type": "pong", "id": data.get("id")}))
        else:
            break
    await ws.close()
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8090)
    args = ap.parse_args()
    app = web.Application()
    app.router.add_get("/v1/stream", handle)
    app.router.add_get("/healthz", lambda _r: web.json_response({"status": "ok"}))
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None, backlog=4096)


if __name__ == "__main__":
    main()
