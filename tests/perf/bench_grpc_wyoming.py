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

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import aiohttp
import grpc
import psutil
from common import (
    SPEECH_FIXTURES,
    Sampler,
    Server,
    Table,
    free_port,
    latency_table,
    markdown,
    print_tables,
    stream_audio,
)
from google.cloud import speech_v1
from google.cloud.speech_v1.services.speech.transports import SpeechGrpcAsyncIOTransport
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient

from tests.audio_utils import wer

RATE = 16_000
FRAME = RATE * 2 // 10  # 100 ms of PCM16
TRANSPORTS = ("websocket", "grpc", "wyoming")


async def paced(pcm: bytes) -> AsyncIterator[bytes]:
    t0 = time.monotonic()
    for i in range(0, len(pcm), FRAME):
        delay = t0 + i / (RATE * 2) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield pcm[i : i + FRAME]


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
    rows = []
    for r in range(repeat):
        for name in fixtures:
            audio = stream_audio(name, lead_s=0.5, tail_s=0.0, seed=r)
            order = TRANSPORTS[r % 3 :] + TRANSPORTS[: r % 3]  # who goes first rotates
            for transport in order:
                latency, text = await CLIENTS[transport](server, grpc_port, wyoming_port, audio.pcm)
                rows.append(
                    {
                        "transport": transport,
                        "clip": name,
                        "latency_ms": latency * 1000,
                        "wer": wer(audio.texts[0], text),
                        "load1": os.getloadavg()[0],
                    }
                )
                print(f"  {transport:9s} {name:22s} {latency * 1000:7.0f} ms  {text!r}", file=sys.stderr)
    return rows


def summarize(rows: list[dict[str, Any]], busy: float) -> Table:
    return latency_table(
        "Final after end of audio: WebSocket vs gRPC vs Wyoming (same hub, same clips, same run)",
        "transport",
        TRANSPORTS,
        rows,
        f"machine busy {busy:.0f}% of 200% (2 cores) during the run; "
        f"{psutil.cpu_count()} CPUs; real-time streams, one at a time, 100 ms frames",
    )


def run(
    fixtures: tuple[str, ...] = SPEECH_FIXTURES, repeat: int = 3
) -> tuple[list[Table], list[dict[str, Any]]]:
    grpc_port, wyoming_port = free_port(), free_port()
    env = {"ASRHUB_SERVER__GRPC_PORT": str(grpc_port), "ASRHUB_SERVER__WYOMING_PORT": str(wyoming_port)}
    with Server("hub", provider="whisper", env=env) as server, Sampler(server.ps) as sampler:
        start = time.monotonic()
        rows = asyncio.run(measure(server, grpc_port, wyoming_port, fixtures, repeat))
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
