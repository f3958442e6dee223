"""Live speaker labels stay the same across a resume (issue 26), with real voices and real parts:
one ``redis-server``, two hubs A and B (in-process, each its own aiohttp server and event loop,
faster-whisper tiny.en, the GE2E encoder and segmentation-3.0) sharing it, a raw WebSocket
client, and two people from ``tests/speakers.py``: Allison Smith's prompts (X) and the
alsa-utils voice's channel names (Y).

X speaks, Y speaks, the connection drops; the session resumes, Y speaks again, then X. The
labels must read 0, 1, 1, 0. On another node, the code before the ``spk`` field of the resume
record started a fresh tracker there, so Y became speaker 0 and X speaker 1 (0, 1, 0, 1: checked,
the test fails on it). On the same node the detached session's chain — and its tracker — keeps
running, so that case already held; it is checked too.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from redis.asyncio import Redis as RedisClient

from asrhub.diarize.tracker import PER_SPEAKER, SpeakerMemory, SpeakerTracker
from asrhub.settings.schema import ClusterSettings
from tests import speakers
from tests.audio_utils import pcm16_bytes
from tests.reliability.harness import RawWS
from tests.transports.conftest import ServerThread, make_settings

from .conftest import Redis, until

ON_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")
"""The hubs' fixture and the client share the module's loop."""

STEP = 3200  # 0.1 s frames
AUDIO = {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}
CONFIG = {"diarize": True, "partials": False, "language": "en", "vad": {"silence_ms": 250}, "audio": AUDIO}


def _utterance(clips: tuple[np.ndarray, ...]) -> bytes:
    """One person's clips, 0.15 s apart (one VAD utterance), then 1 s of silence."""
    gap = np.zeros(2400, np.float32)
    speech = np.concatenate([np.concatenate([clip, gap]) for clip in clips])
    return pcm16_bytes(np.concatenate([speech, np.zeros(16000, np.float32)]))


@cache
def voices() -> dict[str, bytes]:
    x, y = speakers.prompts("allison"), speakers.prompts("alsa")
    return {
        "x1": _utterance((x[6], x[9])),  # ~5 s each
        "y1": _utterance(y[0:3]),  # ~4 s each
        "y2": _utterance(y[3:6]),
        "x2": _utterance((x[7], x[10])),
    }


@pytest.fixture(scope="module")
def nodes(redis_server: Redis) -> Iterator[tuple[ServerThread, ServerThread]]:
    settings = make_settings(keys=(), cluster=ClusterSettings(redis_url=redis_server.url))
    with ServerThread(settings) as a, ServerThread(settings) as b:
        yield a, b


@pytest_asyncio.fixture(loop_scope="module")
async def admin(redis_server: Redis) -> AsyncIterator[RedisClient]:
    client = RedisClient.from_url(redis_server.url)
    yield client
    await client.aclose()


async def send(ws: RawWS, pcm: bytes) -> None:
    for off in range(0, len(pcm), STEP):
        await ws.send_bytes(pcm[off : off + STEP])


async def finals_up_to(ws: RawWS, segment_id: int) -> list[dict[str, Any]]:
    seen = await ws.events_until(
        lambda e: e["type"] == "transcript.final" and e["segment_id"] >= segment_id, within=120
    )
    return [e for e in seen if e["type"] == "transcript.final"]


async def first_half(node: ServerThread, admin: RedisClient, said: tuple[str, ...] = ("x1", "y1")) -> str:
    """X then Y (``said``) on ``node``, their finals received and logged in Redis; the
    connection then drops. Returns the resume token."""
    ws = await RawWS.connect(node.port)
    await ws.send_json({"type": "session.start", "config": CONFIG, "resume": True})
    started = await ws.recv_json()
    assert started["type"] == "session.started", started
    token = started["resume_token"]
    await send(ws, b"".join(voices()[v] for v in said))
    finals = await finals_up_to(ws, len(said))
    assert [f["speaker"] for f in finals] == [0, 1][: len(said)], finals

    async def logged() -> bool:
        return await admin.hget(f"asrhub:resume:{token}", "seg") == str(len(said)).encode()

    await until(logged, 30, "the second final in the resume record")
    ws.reset()  # the client's network dies: no close frame, the session is detached
    ws.writer.close()
    return token


async def second_half(node: ServerThread, token: str) -> list[dict[str, Any]]:
    """Resume on ``node`` after both finals, Y then X, end; the finals after the resume."""
    ws = await RawWS.connect(node.port)
    sent = len(voices()["x1"] + voices()["y1"])
    await ws.send_json(
        {"type": "session.resume", "token": token, "last_segment_id": 2, "audio_from_bytes": sent}
    )
    resumed = await ws.recv_json()
    assert resumed["type"] == "session.resumed", resumed
    assert resumed["replayed"] == 0, resumed
    await send(ws, voices()["y2"] + voices()["x2"])
    await ws.send_json({"type": "session.end"})
    rest = await ws.events_until(lambda e: e["type"] == "session.closed", within=120)
    await ws.close()
    return [e for e in rest if e["type"] == "transcript.final"]


@ON_MODULE_LOOP
async def test_labels_stay_when_the_session_resumes_on_another_node(
    nodes: tuple[ServerThread, ServerThread], admin: RedisClient
) -> None:
    a, b = nodes
    token = await first_half(a, admin)
    raw = await admin.hget(f"asrhub:resume:{token}", "spk")
    assert raw, "no speaker state in the resume record"
    state = json.loads(raw)[""]
    assert state["next"] == 2 and sorted(state["labels"]) == [0, 1], state
    assert len(raw) < 2 * PER_SPEAKER * 256 * 4 * 4 / 3 + 200  # bounded: ≤ PER_SPEAKER vectors a speaker
    SpeakerMemory.decode(raw.decode())  # what the claiming node reads back
    after = await second_half(b, token)
    assert [f["segment_id"] for f in after] == [3, 4], after
    assert [f["speaker"] for f in after] == [1, 0], [(f["speaker"], f["text"]) for f in after]
    assert all(w["speaker"] == f["speaker"] for f in after for w in f["words"])
    assert await b.no_sessions() and await a.no_sessions()  # A let its copy go on the takeover


@ON_MODULE_LOOP
async def test_labels_stay_when_the_session_resumes_on_the_same_node(
    nodes: tuple[ServerThread, ServerThread], admin: RedisClient
) -> None:
    a, _b = nodes
    token = await first_half(a, admin)
    after = await second_half(a, token)
    assert [f["segment_id"] for f in after] == [3, 4], after
    assert [f["speaker"] for f in after] == [1, 0], [(f["speaker"], f["text"]) for f in after]
    assert await a.no_sessions()


@ON_MODULE_LOOP
async def test_a_record_with_unreadable_speaker_state_is_refused_in_the_resume_shape(
    nodes: tuple[ServerThread, ServerThread], admin: RedisClient
) -> None:
    """A ``spk`` that is not a tracker's state (a corrupted record): ``resume_failed`` naming
    it, not a crash of the new session nor labels from garbage."""
    a, b = nodes
    token = await first_half(a, admin, ("x1",))
    await admin.hset(f"asrhub:resume:{token}", "spk", json.dumps({"": {"labels": [0], "embeddings": "%%"}}))
    ws = await RawWS.connect(b.port)
    await ws.send_json({"type": "session.resume", "token": token, "last_segment_id": 1})
    answer = await ws.recv_json()
    await ws.close()
    assert answer["type"] == "error" and answer["code"] == "resume_failed", answer
    assert "speaker" in answer["message"], answer
    assert await a.no_sessions() and await b.no_sessions()


def test_the_saved_state_is_bounded_and_keeps_the_next_label() -> None:
    """40 utterances of 40 unrelated voices (random directions), at most 8 speakers: the state
    holds at most 4 embeddings a speaker, and a tracker restored from it gives no label twice."""
    rng = np.random.default_rng(5)
    tracker = SpeakerTracker(threshold=0.26, max_speakers=8)
    for _ in range(40):
        v = rng.standard_normal(256).astype(np.float32)
        tracker.label(v / np.linalg.norm(v))
    state = json.loads(json.dumps(tracker.state()))
    assert state["next"] == 8 and len(state["labels"]) <= 8 * PER_SPEAKER
    assert all(state["labels"].count(label) <= PER_SPEAKER for label in range(8))
    restored = SpeakerMemory.decode(json.dumps({"": state})).tracker("", threshold=0.26, max_speakers=8)
    assert restored.speakers == 8 and restored.labels == state["labels"]
    v = rng.standard_normal(256).astype(np.float32)
    assert restored.label(v / np.linalg.norm(v)) < 8  # the nearest one's: no ninth speaker
    for bad in (
        '{"": {"labels": [0, 1], "embeddings": "AAAA"}}',
        '{"": {"labels": [-1], "embeddings": ""}}',
        "[]",
    ):
        with pytest.raises(ValueError):
            SpeakerMemory.decode(bad)
