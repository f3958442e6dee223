#!/usr/bin/env python3
"""A final's latency after the end of the audio: WebSocket vs gRPC (Google Speech v1) vs
Wyoming, on the same clips, against one hub, in the same run.

    python tests/perf/bench_grpc_wyoming.py [--repeat 3] [--quick] [--markdown]

One ``asrhub serve`` (default provider whisper, the bundled tiny.en; ``--grpc-port`` and
``--wyoming-port`` set) in its own process. This process is the client: for each English fixture
utterance (0.5 s of room tone before it, nothing after: the clip's own 0.3 s of trailing
silence is shorter than the VAD's 0.5 s hangover, so the final comes from the end-of-audio
flush) and each transport in turn, it streams 100 ms PCM16 frames at real-time pace, then ends
the audio the transport's way — ``session.end`` (WebSocket), half-close (gRPC, the official
``google-cloud-speech`` async client), ``audio-stop`` (Wyoming ``AsyncTcpClient``) — and
measures from that moment to the arrival of the final text (``transcript.final``; a result with
``is_final``; ``transcript``). Partials are on for all three (WebSocket's default,
``interim_results``, Wyoming's streaming chunks). The three transports take turns clip by clip,
so machine load hits them alike; the load average and the machine's busy CPU are printed with
the numbers.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aiohttp
import grpc
from common import SPEECH_FIXTURES, Server, StreamAudio, Table, free_port
from google.cloud import speech_v1
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcAsyncIOTransport
from side_by_side import main, measured, paced, side_table, take_turns
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient

RATE = 16_000
TRANSPORTS = ("websocket", "grpc", "wyoming")


async def via_websocket(server: Server, _grpc: int, _wyoming: int, pcm: bytes) -> tuple[float, str]:
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url) as ws:
        await ws.send_str(json.dumps({"type": "session.start", "config": {"language": "en"}}))
        texts: list[str] = []
        got_final = asyncio.get_running_loop().create_future()

        async def read() -> None:
            async for msg in ws:
                event = json.loads(msg.data)
                if event["type"] == "transcript.final":
                    texts.append(event["text"])
                    if not got_final.done():
                        got_final.set_result(time.monotonic())
                if event["type"] == "session.closed":
                    break

        reader = asyncio.create_task(read())
        async for frame in paced(pcm):
            await ws.send_bytes(frame)
        await ws.send_str('{"type": "session.end"}')
        ended = time.monotonic()
        await reader
        return (got_final.result() if got_final.done() else float("nan")) - ended, " ".join(texts)


async def via_grpc(_server: Server, grpc_port: int, _wyoming: int, pcm: bytes) -> tuple[float, str]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    client = speech_v1.SpeechAsyncClient(transport=SpeechGrpcAsyncIOTransport(channel=channel))
    config = speech_v1.StreamingRecognitionConfig(
        config=speech_v1.RecognitionConfig(
            encoding=speech_v1.RecognitionConfig.AudioEncoding.LINEAR16,
            sample_rate_hertz=RATE,
            language_code="en-US",
        ),
        interim_results=True,
    )
    ended = [float("nan")]

    async def requests() -> AsyncIterator[speech_v1.StreamingRecognizeRequest]:
        yield speech_v1.StreamingRecognizeRequest(streaming_config=config)
        async for frame in paced(pcm):
            yield speech_v1.StreamingRecognizeRequest(audio_content=frame)
        ended[0] = time.monotonic()  # the half-close follows at once

    texts: list[str] = []
    first = float("nan")
    async for response in await client.streaming_recognize(requests=requests()):
        for result in response.results:
            if result.is_final:
                texts.append(result.alternatives[0].transcript)
                if first != first:
                    first = time.monotonic()
    await channel.close()
    return first - ended[0], " ".join(texts)


async def via_wyoming(_server: Server, _grpc: int, wyoming_port: int, pcm: bytes) -> tuple[float, str]:
    async with AsyncTcpClient("127.0.0.1", wyoming_port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=RATE, width=2, channels=1).event())

        async def read() -> tuple[float, str]:
            while (event := await client.read_event()) is not None:
                if Transcript.is_type(event.type):
                    return time.monotonic(), Transcript.from_event(event).text
            return float("nan"), ""

        reader = asyncio.create_task(read())
        async for frame in paced(pcm):
            await client.write_event(AudioChunk(rate=RATE, width=2, channels=1, audio=frame).event())
        await client.write_event(AudioStop().event())
        ended = time.monotonic()
        arrived, text = await reader
        return arrived - ended, text


CLIENTS: dict[str, Callable[[Server, int, int, bytes], Awaitable[tuple[float, str]]]] = {
    "websocket": via_websocket,
    "grpc": via_grpc,
    "wyoming": via_wyoming,
}


async def measure(
    server: Server, grpc_port: int, wyoming_port: int, fixtures: tuple[str, ...], repeat: int
) -> list[dict[str, Any]]:
    async def one(transport: str, audio: StreamAudio) -> tuple[float, str]:
        return await CLIENTS[transport](server, grpc_port, wyoming_port, audio.pcm)

    return await take_turns("transport", TRANSPORTS, one, fixtures, repeat, tail_s=0.0)


def run(
    fixtures: tuple[str, ...] = SPEECH_FIXTURES, repeat: int = 3
) -> tuple[list[Table], list[dict[str, Any]]]:
    grpc_port, wyoming_port = free_port(), free_port()
    env = {"ASRHUB_SERVER__GRPC_PORT": str(grpc_port), "ASRHUB_SERVER__WYOMING_PORT": str(wyoming_port)}
    with Server("hub", provider="whisper", env=env) as server:
        rows, busy = measured(server, measure(server, grpc_port, wyoming_port, fixtures, repeat))
    title = "Final after end of audio: WebSocket vs gRPC vs Wyoming (same hub, same clips, same run)"
    return [side_table(title, "transport", TRANSPORTS, rows, busy)], rows


if __name__ == "__main__":
    main(__doc__, run)
