"""Socket.io transport against the real default engine, with python-socketio's AsyncClient."""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from tests.audio_utils import wer

from .conftest import KEY, ServerThread, finals_text, frames, speech

HUB_EVENTS = (
    "session.started",
    "vad.speech_started",
    "vad.speech_ended",
    "wakeword.detected",
    "transcript.partial",
    "transcript.final",
    "error",
    "pong",
    "session.closed",
)


class Recorder:
    """A Socket.io client that records every hub event (the payload, with its event name)."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.disconnected = asyncio.Event()
        for name in HUB_EVENTS:
            self.sio.on(name, self._handler(name))
        self.sio.on("disconnect", lambda *_: self.disconnected.set())

    def _handler(self, name: str) -> Any:
        async def handler(payload: dict[str, Any]) -> None:
            assert payload["type"] == name, "the event name is the message's type"
            self.events.append(payload)
            self._changed.set()

        return handler

    async def connect(self, url: str, token: str | None = KEY) -> None:
        await self.sio.connect(url, auth={"token": token} if token else None, transports=["websocket"])

    async def wait_for(self, kind: str, within_s: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            while True:
                for event in self.events:
                    if event["type"] == kind:
                        return event
                self._changed.clear()
                await self._changed.wait()

    def take(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events


async def test_socketio_streams_fixture_speech_to_correct_finals(whisper_server: ServerThread) -> None:
    pcm, reference = speech("reminder.wav")
    client = Recorder()
    await client.connect(whisper_server.http)
    try:
        await client.sio.emit("session.start", {"type": "session.start", "config": {"language": "en"}})
        started = await client.wait_for("session.started")
        assert started["config"]["provider"] == "whisper"
        for frame in frames(pcm):
            await client.sio.emit("audio", frame)
        await client.sio.emit("session.end", {"type": "session.end"})
        await client.wait_for("session.closed")
        await asyncio.wait_for(client.disconnected.wait(), 5)  # one session per connection
    finally:
        await client.sio.disconnect()
    types = [e["type"] for e in client.events]
    assert types[0] == "session.started" and types[-1] == "session.closed"
    assert "vad.speech_started" in types
    assert wer(reference, finals_text(client.events)) <= 0.1, finals_text(client.events)


async def test_socketio_ping_bad_messages_and_too_large(whisper_server: ServerThread) -> None:
    limit = whisper_server.settings.limits.max_frame_bytes
    client = Recorder()
    await client.connect(whisper_server.http)
    try:
        await client.sio.emit("ping", {"type": "ping", "id": 9})
        assert (await client.wait_for("pong"))["id"] == 9
        await client.sio.emit("session.start", {"action": {"type": "session.start"}})
        error = await client.wait_for("error")
        assert error["code"] == "bad_message" and not error["fatal"]
        client.take()
        await client.sio.emit("session.start", {"config": {"provider": "none"}})  # type from the event name
        await client.wait_for("session.started")
        await client.sio.emit("audio", "UklGRiQAAABXQVZF")  # base64 text instead of a binary attachment
        error = await client.wait_for("error")
        assert error["code"] == "bad_message" and "binary" in error["message"]
        client.take()
        await client.sio.emit("start", {"type": "start"})  # an unknown event
        assert (await client.wait_for("error"))["code"] == "bad_message"
        client.take()
        await client.sio.emit("audio", bytes(limit + 2))
        error = await client.wait_for("error")
        assert error["code"] == "too_large" and not error["fatal"]
        await client.sio.emit("ping", {"id": "still-alive"})
        assert (await client.wait_for("pong"))["id"] == "still-alive"
    finally:
        await client.sio.disconnect()
    assert await whisper_server.no_sessions()


async def test_engineio_heartbeats_survive_the_garbage_collector() -> None:
    """Engine.IO keeps no reference to a heartbeat task; the transport holds each one until it
    ends, so a collection mid-sleep does not destroy it (nor log "Task was destroyed")."""
    import gc

    from transports.socketio import _hold_background_tasks

    eio = socketio.AsyncServer(async_mode="aiohttp").eio
    held = _hold_background_tasks(eio)
    finished = asyncio.Event()

    async def heartbeat() -> None:
        await asyncio.sleep(0.05)
        finished.set()

    eio.start_background_task(heartbeat)
    assert len(held) == 1
    gc.collect()
    await asyncio.wait_for(finished.wait(), 2)
    await asyncio.sleep(0)
    assert held == set()
