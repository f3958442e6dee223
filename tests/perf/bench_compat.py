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

import asyncio
import base64
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aiohttp
import numpy as np
import openai
from common import SPEECH_FIXTURES, Server, StreamAudio, Table
from side_by_side import main, measured, paced, side_table, take_turns

from tests.audio_utils import resample

RATE = 16_000
APIS = ("websocket", "deepgram", "openai_realtime")


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
        async for frame in paced(pcm):
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
        async for frame in paced(pcm):
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
    async def one(api: str, audio: StreamAudio) -> tuple[float, str]:
        clock = Clock(audio.speech_end_s)
        await CLIENTS[api](server, audio.pcm, clock)
        return await clock.latency(), " ".join(clock.texts)

    return await take_turns("api", APIS, one, fixtures, repeat, tail_s=1.2)


def run(
    fixtures: tuple[str, ...] = SPEECH_FIXTURES, repeat: int = 3
) -> tuple[list[Table], list[dict[str, Any]]]:
    with Server("hub", provider="whisper") as server:
        rows, busy = measured(server, measure(server, fixtures, repeat))
    title = "End of speech → final: native WebSocket vs Deepgram vs OpenAI Realtime (same hub, clips, run)"
    return [side_table(title, "api", APIS, rows, busy, "; includes the VAD's 500 ms hangover")], rows


if __name__ == "__main__":
    main(__doc__, run)
