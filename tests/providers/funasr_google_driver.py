"""Drivers shared by the FunASR and Google provider tests: push fixture audio through a
provider's stage (utterance boundaries from the fixture manifest) or through a whole hub session
(the standard chain of :func:`asrhub.wiring.build_pipeline`), and check the event order."""

from __future__ import annotations

import asyncio
from typing import Any

from reactivex.subject import Subject

from asrhub.config import Limits, SessionConfig
from asrhub.flow import Pending
from asrhub.frames import (
    AudioChunk,
    ErrorEvent,
    Event,
    FinalTranscript,
    Frame,
    PartialTranscript,
    SpeechEnded,
    SpeechStarted,
)
from asrhub.hub import Hub
from asrhub.plugin import Provider
from asrhub.session.context import Context
from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes

RATE = 16_000


async def drive_stage(
    provider: Provider,
    name: str,
    fallbacks: tuple[Provider, ...] = (),
    *,
    config: SessionConfig | None = None,
    limits: Limits | None = None,
    pace_s: float = 0.05,
    margin_s: float = 0.2,
    vad_events: bool = True,
    utterances: int | None = None,
) -> list[Frame]:
    """Each manifest segment (± ``margin_s``) as one VAD utterance, 100 ms chunks, ``pace_s``
    apart (0.05 = twice real time); only the first ``utterances`` if given; with
    ``vad_events=False`` the whole file, no VAD events.
    Returns every frame the stage emitted, in order."""
    samples, _ = load_wav(fixture(name))
    config = config or SessionConfig()
    ctx = Context("test", config, limits or Limits(), (provider, *fallbacks), Pending(3))
    source: Subject[Frame] = Subject()
    out: list[Frame] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    source.pipe(provider.stage(ctx, fallbacks)).subscribe(
        out.append, done.set_exception, lambda: done.set_result(None)
    )
    seq = 0
    spans = [
        (max(0, int((s["start"] - margin_s) * RATE)), min(len(samples), int((s["end"] + margin_s) * RATE)))
        for s in fixture_entry(name)["segments"][:utterances]
    ]
    for a, b in spans if vad_events else [(0, len(samples))]:
        if vad_events:
            source.on_next(SpeechStarted(a / RATE))
        for i in range(a, b, 1600):
            source.on_next(AudioChunk(samples[i : min(i + 1600, b)].copy(), RATE, i / RATE, seq))
            seq += 1
            await asyncio.sleep(pace_s)
        if vad_events:
            source.on_next(SpeechEnded(b / RATE))
    source.on_completed()
    await asyncio.wait_for(done, 240)
    assert ctx.pending.count == 0, "every utterance released its pending slot"
    return out


async def hub_session(
    hub: Hub, config: dict[str, Any], name: str, *, chunk_s: float = 0.1, pace_s: float = 0.05
) -> list[Event]:
    """A whole session: fixture WAV as PCM16 frames through ``hub.open`` / ``feed`` / ``end``."""
    samples, _ = load_wav(fixture(name))
    data = pcm16_bytes(samples)
    session = hub.open(config)
    events: list[Event] = []
    session.events.subscribe(events.append)
    step = int(chunk_s * RATE) * 2
    for i in range(0, len(data), step):
        await session.feed(data[i : i + step])
        await asyncio.sleep(pace_s)
    await asyncio.wait_for(session.end(), 240)
    return events


async def updated_between_utterances(
    provider: Provider, name: str, language: str, new_language: str
) -> list[Event]:
    """A hub session on ``provider`` (registered as ``name``) over ``silences.wav`` in
    ``language``; once utterance 1 has its final, ``session.update`` sets ``new_language``, key
    term ``Zorblax`` and no partials. Checks every utterance got its final and no partial came
    after the update; returns the session's events."""
    from asrhub.wiring import build_pipeline

    samples, _ = load_wav(fixture("silences.wav"))
    data = pcm16_bytes(samples)
    segments = fixture_entry("silences.wav")["segments"]
    hub = Hub(providers={name: provider}, pipeline_factory=build_pipeline, default_provider=name)
    session = hub.open({"language": language})
    events: list[Event] = []
    first_final = asyncio.Event()

    def take(event: Event) -> None:
        events.append(event)
        if isinstance(event, FinalTranscript):
            first_final.set()

    session.events.subscribe(take)
    cut = int((segments[0]["end"] + 1.0) * RATE) * 2  # utterance 1 and its hangover, not utterance 2
    for i in range(0, cut, 3200):
        await session.feed(data[i : min(i + 3200, cut)])
        await asyncio.sleep(0.01)
    await asyncio.wait_for(first_final.wait(), 120)
    hub.update(session, {"language": new_language, "keyterms": ["Zorblax"], "partials": False})
    for i in range(cut, len(data), 3200):
        await session.feed(data[i : i + 3200])
        await asyncio.sleep(0.01)
    await asyncio.wait_for(session.end(), 240)
    finals = check_order(events)
    assert len(finals) == len(segments) and all(isinstance(f, FinalTranscript) for f in finals), finals
    assert not [e for e in events if isinstance(e, PartialTranscript) and e.segment_id > 1]
    return events


async def batch_mode_final(provider: Provider, name: str, clip: str) -> FinalTranscript:
    """A started ``provider`` in its non-streaming mode, registered as ``name``, serves a whole hub
    session of the one-utterance fixture ``clip`` (the standard chain, so the batch stage); the
    provider is closed afterwards. Returns the session's one final, the events checked in order."""
    from asrhub.wiring import build_pipeline

    try:
        assert provider.capabilities.streaming is False
        hub = Hub(providers={name: provider}, pipeline_factory=build_pipeline, default_provider=name)
        events = await hub_session(hub, {}, clip, pace_s=0.0)
    finally:
        await provider.close()
    (final,) = check_order(events)
    assert isinstance(final, FinalTranscript) and final.provider == name
    return final


def transcripts(frames: list[Any]) -> list[PartialTranscript | FinalTranscript | ErrorEvent]:
    return [f for f in frames if isinstance(f, PartialTranscript | FinalTranscript | ErrorEvent)]


def check_order(frames: list[Any], *, vad: bool = True) -> list[FinalTranscript | ErrorEvent]:
    """Exactly one final-or-error per utterance, in utterance order, partials before their final,
    every VAD end before the final of its utterance. Returns the finals/errors."""
    closed: list[int] = []
    ended = 0
    for frame in frames:
        if isinstance(frame, SpeechEnded):
            ended += 1
        elif isinstance(frame, PartialTranscript):
            assert frame.segment_id not in closed, f"partial after the final of {frame.segment_id}"
        elif (
            isinstance(frame, FinalTranscript | ErrorEvent) and getattr(frame, "segment_id", None) is not None
        ):
            assert frame.segment_id is not None
            assert not closed or frame.segment_id > closed[-1], "finals out of order"
            closed.append(frame.segment_id)
            assert not vad or ended >= len(closed), "a final overtook the end of its own utterance"
    return [f for f in frames if isinstance(f, FinalTranscript | ErrorEvent) and f.segment_id is not None]
