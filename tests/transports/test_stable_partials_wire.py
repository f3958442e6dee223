"""``transcript.partial.stable`` on every native transport (WebSocket through asrhub.client,
Socket.io, SSE) and Google's ``stability`` made from it (issue 25, item 3).

Each session streams address_time.wav and, at a few points of the sentence, holds the rest of
the audio until the hub has sent one more partial — so every run sees several decodes of the
growing utterance however loaded the machine is, and the words two of them agree on settle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from asrhub.client import HubStream
from asrhub.frames import PartialTranscript
from transports.google_speech_results import Stability

from .conftest import AUTH, KEY, ServerThread, frames, speech
from .test_socketio import Recorder
from .test_sse import read_sse

CHECKPOINTS = (15, 22, 29, 36, 43)
"""100 ms frames of address_time.wav (speech 0.3–4.9 s) after which the rest waits for a partial."""
WAIT_S = 60.0


class Partials:
    """The partials a client received, and an event set on each."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def add(self, event: dict[str, Any]) -> None:
        if event["type"] == "transcript.partial":
            self.items.append(event)
            self.changed.set()

    async def more_than(self, n: int) -> None:
        while len(self.items) <= n:
            self.changed.clear()
            await self.changed.wait()


async def feed(send: Callable[[bytes], Awaitable[Any]], partials: Partials) -> None:
    pcm, _ = speech("address_time.wav")
    for i, frame in enumerate(frames(pcm), start=1):
        await send(frame)
        if i in CHECKPOINTS:
            await asyncio.wait_for(partials.more_than(len(partials.items)), WAIT_S)


def check(partials: list[dict[str, Any]]) -> None:
    """Every partial has a stable part that its text begins with and that only grows; some
    words settled before the final."""
    assert len(partials) >= len(CHECKPOINTS), partials
    before: list[str] = []
    for p in partials:
        assert isinstance(p.get("stable"), str), p
        stable = p["stable"].split()
        assert p["text"].split()[: len(stable)] == stable, p
        assert stable[: len(before)] == before, (before, p)
        before = stable
    assert before, partials


async def test_websocket_through_asrhub_client(whisper_server: ServerThread) -> None:
    got = Partials()
    stream = await HubStream.connect(whisper_server.ws, config={"language": "en"}, api_key=KEY)
    try:

        async def read() -> None:
            while (event := await stream.receive()) is not None:
                if isinstance(event, PartialTranscript):
                    assert event.stable is not None  # the client's event type carries it
                    got.add(event.to_dict())

        reader = asyncio.create_task(read())
        await feed(stream.send, got)
        await stream.end()
        await asyncio.wait_for(reader, WAIT_S)
    finally:
        await stream.close()
    check(got.items)


async def test_socketio(whisper_server: ServerThread) -> None:
    client, got = Recorder(), Partials()
    client.sio.on("transcript.partial", got.add)
    await client.connect(whisper_server.http)
    try:
        await client.sio.emit("session.start", {"type": "session.start", "config": {"language": "en"}})
        await client.wait_for("session.started")
        await feed(lambda frame: client.sio.emit("audio", frame), got)
        await client.sio.emit("session.end", {"type": "session.end"})
        await client.wait_for("session.closed", WAIT_S)
    finally:
        await client.sio.disconnect()
    check(got.items)


async def test_sse(whisper_server: ServerThread) -> None:
    base = whisper_server.http
    got = Partials()
    config = {"config": {"language": "en"}}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/sessions", json=config, headers=AUTH) as resp:
            sid = (await resp.json())["session_id"]

        async def subscribe() -> None:
            async with http.get(f"{base}/v1/sessions/{sid}/events", headers=AUTH) as resp:
                async for event in read_sse(resp):
                    got.add(event)

        reader = asyncio.create_task(subscribe())

        async def post(frame: bytes) -> None:
            async with http.post(f"{base}/v1/sessions/{sid}/audio", data=frame, headers=AUTH) as resp:
                assert resp.status == 204, await resp.text()

        await feed(post, got)
        async with http.post(f"{base}/v1/sessions/{sid}/end", headers=AUTH) as resp:
            assert resp.status == 200
        await asyncio.wait_for(reader, WAIT_S)
    check(got.items)


def test_google_stability_is_the_share_of_stable_words() -> None:
    stability = Stability()
    assert stability.of(PartialTranscript(1, "please deliver", 0.0, 1.0, stable="")) == 0.01
    assert stability.of(PartialTranscript(1, "please deliver the package", 0.0, 2.0, stable="please")) == 0.25
    settled = PartialTranscript(1, "please deliver the", 0.0, 2.5, stable="please deliver the")
    assert stability.of(settled) == 0.9
    # an engine without a stable part: the share that repeats the previous guess, as before
    assert stability.of(PartialTranscript(2, "front left", 0.0, 1.0)) == 0.01
    assert stability.of(PartialTranscript(2, "front left right", 0.0, 1.5)) == 2 / 3
