"""Engine faults: a provider that raises, hangs past its timeout (inside the shared worker
pool), or returns garbage. The client gets ``provider_failed`` for exactly that utterance (or
failover serves it), the hub keeps running, the pool is not poisoned (a call that timed out
gives its slot back even though its thread is still stuck), and another session's final is
not slowed. The engine runs two workers here: with one, a hung call holds the only worker until
``provider_timeout_s``, and finals queued behind it wait that long (see docs/reliability.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from asrhub.engine.batch_stage import batch_stage
from asrhub.frames import Samples, Word
from asrhub.hub import Hub
from asrhub.plugin import Capabilities, Operator, Priority, Provider, SessionContext, Transcription
from asrhub.providers.whisper import WhisperProvider
from asrhub.settings.schema import Settings
from asrhub.wiring import build_pipeline
from tests.audio_utils import wer
from tests.engine_calls import run_on_lane
from tests.transports.conftest import ServerThread

from .conftest import reliability_settings
from .harness import RawWS, Watch, chunks, manifest_segments, pcm_of, silence

PROVIDER_TIMEOUT_S = 3.0


class FakeFaultyProvider:
    """Fault injection around the real faster-whisper provider. Each call to ``transcribe``
    takes the next mode of ``plan``: ``ok`` (the real engine), ``raise``, ``hang`` (blocks a
    thread of whisper's own InferencePool until released), ``garbage`` (not a Transcription),
    ``bad_words`` (a real transcription with NaN/inf word times)."""

    name = "faulty"

    def __init__(self, real: WhisperProvider) -> None:
        self.real = real
        self.capabilities = Capabilities(
            streaming=False, partials=False, word_timestamps=True, languages=("en",)
        )
        self.plan: list[str] = ["ok"]
        self.calls = 0
        self.hanging = threading.Event()
        self.release = threading.Event()

    async def start(self) -> None:
        await self.real.start()

    async def close(self) -> None:
        self.release.set()

    async def transcribe(
        self,
        samples: Samples,
        *,
        language: str | None = None,
        prompt: str | None = None,
        priority: Priority = Priority.FINAL,
        **options: Any,
    ) -> Transcription:
        mode = self.plan[min(self.calls, len(self.plan) - 1)]
        self.calls += 1
        if mode == "raise":
            raise RuntimeError("FakeFaulty: the engine crashed")
        if mode == "hang":
            pool = self.real.engine().pool
            assert pool is not None

            def hang() -> None:
                self.hanging.set()
                self.release.wait(120)

            await run_on_lane(pool, hang)
        result = await self.real.transcribe(samples, language=language, prompt=prompt, priority=priority)
        if mode == "garbage":
            return {"text": result.text}  # type: ignore[return-value]
        if mode == "bad_words":
            return dataclasses.replace(result, words=(Word("x", float("nan"), float("inf"), 2.0),))
        return result

    def stage(self, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
        return batch_stage(self, ctx, fallbacks)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "wraps": "whisper", "plan": self.plan}


@pytest.fixture(scope="module")
def faulty_server() -> Iterator[tuple[ServerThread, FakeFaultyProvider]]:
    made: list[FakeFaultyProvider] = []

    def hub_factory(settings: Settings) -> Hub:
        real = WhisperProvider({"workers": 2})  # one hung call must not stall the others
        made.append(FakeFaultyProvider(real))
        return Hub(
            providers={"whisper": real, "faulty": made[0]},
            pipeline_factory=build_pipeline,
            default_provider="whisper",
            limits=settings.limits,
        )

    with ServerThread(reliability_settings(provider_timeout_s=PROVIDER_TIMEOUT_S), hub_factory) as server:
        yield server, made[0]
        made[0].release.set()


SILENCES = pcm_of("silences.wav")
SEGMENTS = manifest_segments()
QUICK_FOX = pcm_of("quick_fox.wav") + silence(1.0)


async def stream(port: int, pcm: bytes, config: dict[str, Any]) -> list[dict[str, Any]]:
    """One whole session at full speed: every event up to session.closed."""
    ws = await RawWS.connect(port)
    await ws.send_json({"type": "session.start", "config": config})
    events = [await ws.recv_json()]
    assert events[0]["type"] == "session.started", events
    sender = asyncio.create_task(_send(ws, pcm))
    events += await ws.events_until(lambda e: e["type"] == "session.closed", within=90)
    await sender
    await ws.close()
    return events


async def _send(ws: RawWS, pcm: bytes) -> None:
    for chunk in chunks(pcm, 200):
        await ws.send_bytes(chunk)
    await ws.send_json({"type": "session.end"})


async def final_latency(port: int) -> float:
    """Seconds from the last audio frame of quick_fox (+1 s silence) to its final."""
    ws = await RawWS.connect(port)
    await ws.send_json({"type": "session.start", "config": {"language": "en", "partials": False}})
    assert (await ws.recv_json())["type"] == "session.started"
    for chunk in chunks(QUICK_FOX, 200):
        await ws.send_bytes(chunk)
    sent = time.monotonic()
    events = await ws.events_until(lambda e: e["type"] == "transcript.final", within=60)
    latency = time.monotonic() - sent
    assert events[-1]["type"] == "transcript.final", events
    assert wer("The quick brown fox jumps over the lazy dog.", events[-1]["text"]) < 0.3
    await ws.close()
    return latency


async def test_raise_hang_and_garbage_each_fail_one_utterance_and_nothing_else(
    faulty_server: tuple[ServerThread, FakeFaultyProvider], figures: Any
) -> None:
    server, fake = faulty_server
    with Watch(server.loop) as watch:
        baseline = min([await final_latency(server.port) for _ in range(2)])
        fake.plan = ["raise", "hang", "garbage", "bad_words", "ok"]
        faulty = asyncio.create_task(stream(server.port, SILENCES, {"provider": "faulty", "language": "en"}))
        assert await asyncio.to_thread(fake.hanging.wait, 60), "the hang was never reached"
        during = await final_latency(server.port)  # while the hung call holds a worker
        # That final came while the hung call still hangs: it did not wait for it (an event,
        # not a latency bound; the latencies are figures, see docs/reliability.md).
        hung_meanwhile = fake.hanging.is_set() and not fake.release.is_set()
        events = await faulty
        pool = server.hub.providers["whisper"].engine().pool  # type: ignore[attr-defined]
        state = await asyncio.to_thread(server.call, lambda: (pool.busy, pool.queued, pool.stats.abandoned))
        assert not fake.release.is_set()  # the hung thread still blocks: the pool gave its slot back
        assert state[0] == 0 and state[1] == 0 and state[2] >= 1, state
        after = await final_latency(server.port)
        health = await asyncio.to_thread(server.call, lambda: server.hub.accepting)
        errors = watch.errors()
    fake.release.set()
    outcome = [e for e in events if e["type"] in ("transcript.final", "error")]
    assert [e["type"] for e in outcome] == ["error", "error", "error", "error"], outcome
    assert [e["code"] for e in outcome] == ["provider_failed"] * 4
    assert [e["segment_id"] for e in outcome] == [1, 2, 3, 4]  # exactly one outcome per utterance
    assert "crashed" in outcome[0]["message"] and f"{PROVIDER_TIMEOUT_S:g} s" in outcome[1]["message"]
    assert "dict" in outcome[2]["message"] and "malformed word" in outcome[3]["message"]
    assert not any(e.get("fatal") for e in outcome)
    assert events[-1] == {"type": "session.closed", "reason": "end"}
    assert health and errors == []
    figures(
        "engine faults: final latency alone / behind a hung call / after it (s)",
        f"{baseline:.2f} / {during:.2f} / {after:.2f} (provider_timeout_s={PROVIDER_TIMEOUT_S:g})",
    )
    assert hung_meanwhile, "the other session's final waited for the hung engine call"


async def test_failover_serves_the_utterance_a_faulty_engine_dropped(
    faulty_server: tuple[ServerThread, FakeFaultyProvider],
) -> None:
    server, fake = faulty_server
    fake.plan, fake.calls = ["garbage", "raise", "ok"], 0
    with Watch(server.loop) as watch:
        events = await stream(server.port, SILENCES, {"provider": ["faulty", "whisper"], "language": "en"})
        errors = watch.errors()
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert not [e for e in events if e["type"] == "error"], events
    assert [f["segment_id"] for f in finals] == [1, 2, 3, 4]
    assert finals[0]["provider"] == "whisper"  # the faulty engine failed it; whisper served it
    for final, ref in zip(finals, SEGMENTS, strict=True):
        assert wer(ref["text"], final["text"]) < 0.35
    assert errors == []
