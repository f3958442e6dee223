#!/usr/bin/env python3
"""A live session's end of speech → final, alone and while a 10-minute upload runs.

    python tests/perf/bench_upload_vs_live.py [--upload-s 600] [--utterances 5]

One in-process hub (whisper tiny.en, one worker: the engine every session and upload shares).
The live session streams the English fixture utterances at real-time pace (100 ms PCM16 frames,
1.5 s of room tone after each); per utterance, latency = receive(transcript.final) − send(the
frame holding the true end of speech, from manifest.json). Three runs:

- ``alone``: no upload;
- ``upload, 30 s jobs``: ``Hub.transcribe`` of a 10-minute file, which the hub cuts into ≤ 30 s
  jobs (asrhub/engine/uploads.py) — today's path for /v1/transcribe, /v1/audio/transcriptions and
  asrhub.api;
- ``upload, one call``: the same file as one engine call (``job_s`` = the file's length), the
  path before: the live finals wait behind the whole file.

The load (1-min load average, other processes' CPU) is printed with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asrhub.config import Limits
from asrhub.frames import FinalTranscript
from asrhub.hub import Hub
from asrhub.providers.whisper import WhisperProvider
from asrhub.wiring import build_pipeline
from tests import audio_utils as au

RATE = 16_000
FRAME_S = 0.1
SPEECH = ("quick_fox.wav", "weather_question.wav", "address_time.wav", "reminder.wav", "science.wav")


def live_audio(n: int) -> tuple[np.ndarray, list[float]]:
    """Fixture utterances with room tone between; the stream times where each one's speech ends."""
    parts, ends, t = [au.room_noise(0.5, seed=1)], [], 0.5
    for i in range(n):
        name = SPEECH[i % len(SPEECH)]
        x, _ = au.load_wav(au.fixture(name))
        ends.append(t + au.fixture_entry(name)["segments"][-1]["end"])
        parts += [x, au.room_noise(1.5, seed=2 + i)]
        t += len(x) / RATE + 1.5
    return np.concatenate(parts).astype(np.float32), ends


def upload_audio(seconds: float) -> np.ndarray:
    """About ``seconds`` of speech: the fixtures (long_40s included) over and over."""
    pieces, total = [], 0.0
    names = ("long_40s.wav", *SPEECH)
    while total < seconds:
        x, _ = au.load_wav(au.fixture(names[len(pieces) % len(names)]))
        pieces.append(x)
        total += len(x) / RATE
    return np.concatenate(pieces)[: int(seconds * RATE)].astype(np.float32)


async def live_session(
    hub: Hub, audio: np.ndarray, ends: list[float], counts: dict[str, int] | None = None
) -> list[float]:
    session = hub.open({"provider": "whisper", "language": "en", "partials": False})
    finals: list[tuple[float, FinalTranscript]] = []
    session.events.subscribe(
        lambda e: finals.append((time.monotonic(), e)) if isinstance(e, FinalTranscript) else None
    )
    sent_at: dict[int, float] = {}
    step = int(FRAME_S * RATE)
    pcm = au.pcm16_bytes(audio)
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(audio), step)):
        await asyncio.sleep(max(0.0, t0 + k * FRAME_S - time.monotonic()))
        await session.feed(pcm[2 * i : 2 * (i + step)])
        sent_at[k] = time.monotonic()
    await session.end()
    if counts is not None:
        early = session.ctx.early_finals
        counts.update(started=early.started, used=early.used, dropped=early.dropped)
    out = []
    for end in ends:
        frame = int(end / FRAME_S)
        got = [t for t, f in finals if f.start <= end <= f.end + 0.3]
        if got and frame in sent_at:
            out.append(got[0] - sent_at[frame])
    return out


def stats(xs: list[float]) -> str:
    if not xs:
        return "no finals"
    a = np.array(xs) * 1000
    return (
        f"n={len(a)} p50={np.percentile(a, 50):.0f} ms p95={np.percentile(a, 95):.0f} ms max={a.max():.0f} ms"
    )


def load() -> str:
    one = psutil.getloadavg()[0]
    busy = psutil.cpu_percent(interval=0.5)
    return f"load1={one:.2f}, machine CPU busy {busy:.0f}% of {psutil.cpu_count()} cores"


async def run(upload_s: float, utterances: int) -> dict[str, Any]:
    whisper = WhisperProvider({"workers": 1})
    hub = Hub(
        providers={"whisper": whisper},
        pipeline_factory=build_pipeline,
        default_provider="whisper",
        limits=Limits(provider_timeout_s=3600.0),
    )
    await hub.start()
    audio, ends = live_audio(utterances)
    big = upload_audio(upload_s)
    results: dict[str, Any] = {}
    try:
        await hub.transcribe(big[: 5 * RATE])  # warm up
        for label, job_s in (
            ("alone", None),
            ("upload, 30 s jobs", 30.0),
            ("upload, one call", upload_s + 1),
        ):
            before = load()
            upload = None
            if job_s is not None:
                started = time.monotonic()
                upload = asyncio.create_task(hub.transcribe(big, job_s=job_s))
                await asyncio.sleep(1.0)  # the upload holds the engine when the live session starts
            latencies = await live_session(hub, audio, ends)
            upload_time = None
            if upload is not None:
                await upload
                upload_time = time.monotonic() - started
            results[label] = (latencies, upload_time, before, load())
            print(
                f"{label:>20}: {stats(latencies)}"
                + (f"; upload of {upload_s:.0f} s took {upload_time:.1f} s" if upload_time else "")
                + f"  [{before} / after: {load()}]",
                flush=True,
            )
    finally:
        await hub.shutdown(grace_s=1.0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upload-s", type=float, default=600.0)
    parser.add_argument("--utterances", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.upload_s, args.utterances))


if __name__ == "__main__":
    main()
