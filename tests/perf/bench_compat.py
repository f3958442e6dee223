#!/usr/bin/env python3
"""End of speech → final: the native WebSocket vs the Deepgram-compatible ``/v1/listen`` vs
OpenAI Realtime transcription, on the same clips, against one hub, in the same run.

    python tests/perf/bench_compat.py [--repeat 3] [--quick] [--markdown]

One ``asrhub serve`` (default provider whisper, the bundled tiny.en) in its own process. This
process is the client: for each English fixture utterance (0.5 s of room tone before it, 1.2 s
after) and each API in turn, it streams 100 ms frames at real-time pace — the native client over
``/v1/stream``, the official ``deepgram-sdk`` (``listen.v1.connect``, linear16), the official
``openai`` SDK (``realtime.connect``, ``audio/pcm`` 24 kHz, base64 appends) — and measures from
the moment the clip's last spoken sample was sent to the arrival of its final
(``transcript.final``; ``Results`` with ``is_final``;
``conversation.item.input_audio_transcription.completed``). The final comes from the VAD
(500 ms of silence, the default of all three), so every number includes that hangover. The APIs
take turns clip by clip (who goes first rotates each round), so machine load hits them alike;
the load average and the machine's busy CPU are printed with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aiohttp
import numpy as np
import openai
import psutil
from common import (
    SPEECH_FIXTURES,
    Sampler,
    Server,
    Table,
    latency_table,
    markdown,
    print_tables,
    stream_audio,
)

from tests.audio_utils import resample, wer

RATE = 16_000
FRAME_S = 0.1
APIS = ("websocket", "deepgram", "openai_realtime")


async def paced(pcm: bytes, rate: int) -> AsyncIterator[bytes]:
    step = int(rate * FRAME_S) * 2
    t0 = time.monotonic()
    for i in range(0, len(pcm), step):
        delay = t0 + i / (rate * 2) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield pcm[i : i + step]


class Clock:
    """Wall time of the clip's end of speech, and of the first final after it."""

    def __init__(self, speech_end_s: float) -> None:
        self.speech_end_s = speech_end_s
        self.t0 = 0.0
        self.final = asyncio.get_running_loop().create_future()
        self.texts: list[str] = []

    def start(self) -> None:
        self.t0 = time.monotonic()

    def got(self, text: str) -> None:
        if text.strip():
            self.texts.append(text.strip())
            if not self.final.done():
                self.final.set_result(time.monotonic())

    async def latency(self) -> float:
        arrived = await asyncio.wait_for(self.final, 120)
        return arrived - (self.t0 + self.speech_end_s)


async def via_websocket(server: Server, pcm: bytes, clock: Clock) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": {"language": "en"}}))

        async def read() -> None:
            async for msg in ws:
                event = json.loads(msg.data)
                if event["type"] == "transcript.final":
                    clock.got(event["text"])
                if event["type"] == "session.closed":
                    break

        reader = asyncio.create_task(read())
        clock.start()
        async for frame in paced(pcm, RATE):
            await ws.send_bytes(frame)
        await clock.final
        await ws.send_str('{"type": "session.end"}')
        await reader


async def via_deepgram(server: Server, pcm: bytes, clock: Clock) -> None:
    from deepgram import AsyncDeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    env = DeepgramClientEnvironment(
        base=server.http, production=f"ws://127.0.0.1:{server.port}", agent="", agent_rest=""
    )
    client = AsyncDeepgramClient(api_key="bench", environment=env)
    async with client.listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate="16000", language="en"
    ) as conn:

        async def read() -> None:
            async for message in conn:
                if getattr(message, "type", None) == "Results" and message.is_final:
                    clock.got(message.channel.alternatives[0].transcript)

        reader = asyncio.create_task(read())
        clock.start()
        async for frame in paced(pcm, RATE):
            await conn.send_media(frame)
        await clock.final
        await conn.send_close_stream()
        await reader


async def via_openai(server: Server, pcm: bytes, clock: Clock) -> None:
    x = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    pcm24 = (np.clip(resample(x, RATE, 24_000), -1, 1) * 32767).astype("<i2").tobytes()
    client = openai.AsyncOpenAI(base_url=f"{server.http}/v1", api_key="bench", max_retries=0)
    session = {
        "type": "transcription",
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"language": "en"}}
        },
    }
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session=session)  # type: ignore[arg-type]

        async def read() -> None:
            async for event in conn:
                if event.type == "conversation.item.input_audio_transcription.completed":
                    clock.got(event.transcript)
                    return

        reader = asyncio.create_task(read())
        clock.start()
        async for frame in paced(pcm24, 24_000):
            await conn.input_audio_buffer.append(audio=base64.b64encode(frame).decode())
        await reader
    await client.close()


CLIENTS: dict[str, Callable[[Server, bytes, Clock], Awaitable[None]]] = {
    "websocket": via_websocket,
    "deepgram": via_deepgram,
    "openai_realtime": via_openai,
}


async def measure(server: Server, fixtures: tuple[str, ...], repeat: int) -> list[dict[str, Any]]:
    rows = []
    for r in range(repeat):
        for name in fixtures:
            audio = stream_audio(name, lead_s=0.5, tail_s=1.2, seed=r)
            order = APIS[r % 3 :] + APIS[: r % 3]  # who goes first rotates
            for api in order:
                clock = Clock(audio.speech_end_s)
                await CLIENTS[api](server, audio.pcm, clock)
                latency = await clock.latency()
                text = " ".join(clock.texts)
                rows.append(
                    {
                        "api": api,
                        "clip": name,
                        "latency_ms": latency * 1000,
                        "wer": wer(audio.texts[0], text),
                        "load1": os.getloadavg()[0],
                    }
                )
                print(f"  {api:15s} {name:22s} {latency * 1000:7.0f} ms  {text!r}", file=sys.stderr)
    return rows


def summarize(rows: list[dict[str, Any]], busy: float) -> Table:
    return latency_table(
        "End of speech → final: native WebSocket vs Deepgram vs OpenAI Realtime (same hub, clips, run)",
        "api",
        APIS,
        rows,
        f"machine busy {busy:.0f}% of 200% (2 cores) during the run; {psutil.cpu_count()} CPUs; "
        "real-time streams, one at a time, 100 ms frames; includes the VAD's 500 ms hangover",
    )


def run(
    fixtures: tuple[str, ...] = SPEECH_FIXTURES, repeat: int = 3
) -> tuple[list[Table], list[dict[str, Any]]]:
    with Server("hub", provider="whisper") as server, Sampler(server.ps) as sampler:
        start = time.monotonic()
        rows = asyncio.run(measure(server, fixtures, repeat))
        busy = sampler.machine_busy(start, time.monotonic())
    return [summarize(rows, busy)], rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="two clips, one round")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    fixtures = SPEECH_FIXTURES[:2] if args.quick else SPEECH_FIXTURES
    tables, rows = run(fixtures, 1 if args.quick else args.repeat)
    print_tables(tables)
    if args.markdown:
        print(markdown(tables))
    if args.json_path:
        Path(args.json_path).write_text(
            json.dumps({"rows": rows, "tables": [t.to_dict() for t in tables]}, indent=1)
        )


if __name__ == "__main__":
    main()
