#!/usr/bin/env python3
"""VAD engines side by side: webrtcvad vs Silero VAD v5 in ``vad_gate`` (issue 25, item 1).

    python tests/perf/bench_vad_engines.py [--sessions 300 1000] [--seconds 2] [--repeat 2]

Audio (all read in place from Debian packages; nothing is committed):

* real speech: the eight spoken channel names of ``alsa-utils`` (/usr/share/sounds/alsa) and the
  prompts of ``asterisk-core-sounds-en-wav`` (Allison Smith's voice, CC-BY-SA-3.0, 8 kHz), every
  clip resampled to 16 kHz and normalised to −23 dBFS RMS over its speech;
* real noise: the field recordings of ``openttd-opensfx`` (trains, traffic, wind, machinery,
  applause, animals; CC-BY-SA/CC0, one .cat archive of WAVs; the crowd "oooh" is left out as
  it is voice);
* mixes: the speech stream (clips 1.5 s apart) plus the noise stream looped under it at SNR
  20 / 10 / 5 / 0 dB.

Reference speech frames (20 ms): on each clean clip, frames that BOTH classifiers call speech on
their own (webrtcvad at aggressiveness 3, whose hangover is trimmed by its 4 frames, and Silero's
probability ≥ 0.5): the consensus, so neither engine is scored against itself. Missed speech = the
share of reference frames not inside any utterance the gate opened (SpeechStarted.t ..
SpeechEnded.t); false starts = utterances that hold no reference frame, per minute of audio (on
noise alone: every utterance). End lag = from the last reference frame of a clip to the gate's
decision (the end of the audio it passed before SpeechEnded), silence_ms 500.

CPU: N gates in one process, each fed 100 ms PCM16 chunks of the mixed stream (each session at
another offset); ``webrtc`` and ``silero (1 call/window)`` without an event loop (each chunk
scored at once), ``silero batched`` on a running loop with every session's chunk of a round in
one tick (``per tick 16``: 16 sessions a tick), the model run off the loop in flights. Process
CPU time per 20 ms frame of audio (all threads; and the event loop's thread alone), and the
cores 1000 real-time sessions would need. Engines interleaved,
``--repeat`` times; ``uptime`` printed before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import reactivex
import soundfile as sf
from reactivex.subject import Subject

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asrhub.frames import AudioChunk, Frame, SpeechEnded, SpeechStarted
from asrhub.operators._pcm import Pcm16Chunk
from asrhub.operators._vad_silero import SileroClassifier, SileroVad
from asrhub.operators._vad_webrtc import WebrtcClassifier
from asrhub.operators.vad_gate import vad_gate
from tests.audio_utils import pcm16_bytes, resample

RATE = 16_000
FRAME = 320
ALSA = Path("/usr/share/sounds/alsa")
ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
OPENSFX = Path("/usr/share/games/openttd/baseset/opensfx/opensfx.cat")
HINT = "apt-get install alsa-utils asterisk-core-sounds-en-wav openttd-opensfx"
SPEECH_DBFS = -23.0
GAP_S = 1.5
SNRS = (20, 10, 5, 0)
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("webrtc a=2 (default)", {"engine": "webrtc", "aggressiveness": 2}),
    ("webrtc a=3", {"engine": "webrtc", "aggressiveness": 3}),
    ("silero t=0.5", {"engine": "silero", "threshold": 0.5}),
    ("silero t=0.7", {"engine": "silero", "threshold": 0.7}),
]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def read16(data: Any) -> np.ndarray:
    x, rate = sf.read(data, dtype="float32", always_2d=True)
    return resample(x.mean(axis=1).astype(np.float32), rate, RATE).astype(np.float32)


def dbfs(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12))


def speech_clips(limit: int) -> list[np.ndarray]:
    paths = [p for p in sorted(ALSA.glob("*.wav")) if p.name != "Noise.wav"]
    prompts = sorted(ASTERISK.glob("*.wav"), key=lambda p: -p.stat().st_size)[:limit]
    if not paths or not prompts:
        sys.exit(f"real speech missing: {HINT}")
    return [read16(p) for p in [*paths, *prompts]]


def noise_clips() -> list[tuple[str, np.ndarray]]:
    """The WAVs of the OpenSFX catalogue: (name, samples), silent or voice entries left out."""
    if not OPENSFX.is_file():
        sys.exit(f"real noise missing: {HINT}")
    data = OPENSFX.read_bytes()
    count = (struct.unpack_from("<I", data, 0)[0] & 0x7FFFFFFF) // 8
    out = []
    for i in range(count):
        offset, size = struct.unpack_from("<II", data, 8 * i)
        offset &= 0x7FFFFFFF
        length = data[offset]
        name = data[offset + 1 : offset + 1 + length].rstrip(b"\0").decode("latin-1").split('"')[1:2]
        blob = data[offset + 1 + length : offset + size]
        if not blob.startswith(b"RIFF") or (name and "Oooh" in name[0]):
            continue
        x = read16(io.BytesIO(blob))
        if len(x) > RATE // 2 and dbfs(x) > -60:
            out.append((name[0] if name else str(i), x))
    return out


def reference(clip: np.ndarray, silero: SileroVad) -> np.ndarray:
    """Per 20 ms frame of a clean clip: both classifiers call it speech."""
    pcm = pcm16_bytes(clip)
    n = len(clip) // FRAME
    web = WebrtcClassifier(3)
    judge = web.judge(pcm, 0, 0, RATE)
    w = np.array([judge(memoryview(pcm)[2 * FRAME * i : 2 * FRAME * (i + 1)], FRAME) for i in range(n)], bool)
    trimmed = w.copy()  # webrtcvad's own hangover: the last frames of every voiced run
    edges = np.flatnonzero(np.diff(np.concatenate(([0], w.astype(np.int8), [0]))))
    for end in edges[1::2]:
        trimmed[max(0, end - web.hangover_frames) : end] = False
    s = SileroClassifier(silero.model(), 0.5)
    judge = s.judge(pcm, 0, 0, RATE)
    v = np.array([judge(memoryview(pcm)[2 * FRAME * i : 2 * FRAME * (i + 1)], FRAME) for i in range(n)], bool)
    return trimmed & v


def layout(clips: list[np.ndarray], silero: SileroVad) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The speech stream (clips GAP_S apart, normalised), its reference frames, clip end frames."""
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    parts, refs, ends = [gap], [np.zeros(len(gap) // FRAME, bool)], []
    for clip in clips:
        clip = clip[: len(clip) // FRAME * FRAME]
        ref = reference(clip, silero)
        if not ref.any():
            continue
        active = np.repeat(ref, FRAME)
        clip = clip * np.float32(10 ** ((SPEECH_DBFS - dbfs(clip[active])) / 20))
        base = sum(len(r) for r in refs)
        parts += [clip, gap]
        refs += [ref, np.zeros(len(gap) // FRAME, bool)]
        ends.append(base + int(np.flatnonzero(ref)[-1]) + 1)
    return np.concatenate(parts), np.concatenate(refs), ends


def noise_track(noises: list[tuple[str, np.ndarray]], n: int, level_dbfs: float) -> np.ndarray:
    track = np.concatenate([x * np.float32(10 ** ((level_dbfs - dbfs(x)) / 20)) for _, x in noises])
    return np.resize(track, n).astype(np.float32)


def chunks(x: np.ndarray, size: int = RATE // 10, offset: int = 0) -> list[AudioChunk]:
    x = np.clip(x, -1.0, 1.0)
    out: list[AudioChunk] = []
    for k, i in enumerate(range(0, len(x) - size + 1, size)):
        pcm = pcm16_bytes(x[i : i + size])
        out.append(Pcm16Chunk(None, RATE, (offset + i) / RATE, k, pcm))  # type: ignore[arg-type]
    return out


Found = list[tuple[float, float, float]]


def utterances(x: np.ndarray, settings: dict[str, Any], silero: SileroVad) -> Found:
    """(start t, end t, decision time) of every utterance the gate opens on ``x``."""
    out: list[Frame] = []
    reactivex.from_iterable(chunks(x)).pipe(vad_gate(silero=silero, **settings)).subscribe(out.append)
    found, start, last = [], 0.0, 0.0
    for f in out:
        if isinstance(f, SpeechStarted):
            start = f.t
        elif isinstance(f, AudioChunk):
            last = f.start + len(f.samples) / RATE
        elif isinstance(f, SpeechEnded):
            found.append((start, f.t, last))
    return found


def score(found: Found, ref: np.ndarray, ends: list[int], quiet: np.ndarray) -> dict[str, float]:
    inside = np.zeros(len(ref), bool)
    false = 0
    for a, b, _ in found:
        lo, hi = int(a * RATE) // FRAME, -(-int(b * RATE) // FRAME)
        inside[lo:hi] = True
        false += not ref[lo:hi].any()
    lags = []
    for end in ends:
        decided = [d for a, b, d in found if a * RATE / FRAME <= end <= -(-b * RATE // FRAME) + 1]
        if decided:
            lags.append(decided[0] - end * FRAME / RATE)
    minutes = len(ref) * FRAME / RATE / 60
    return {
        "missed %": 100 * float((ref & ~inside).sum() / max(1, ref.sum())),
        "false /min": false / minutes,
        "utterances": len(found),
        "open %": 100 * float((inside & quiet).sum() / max(1, quiet.sum())),
        "end lag ms": 1000 * float(np.median(lags)) if lags else float("nan"),
    }


def quality(args: argparse.Namespace, silero: SileroVad) -> None:
    speech, ref, ends = layout(speech_clips(args.prompts), silero)
    gaps = np.ones(len(ref), bool)  # frames of the gaps between clips (no speech at all)
    for clip in _spans(ref, ends):
        gaps[clip] = False
    noises = noise_clips()
    minutes = len(speech) / RATE / 60
    print(f"\nspeech: {len(ends)} real clips, {minutes:.1f} min, {ref.mean() * 100:.0f} % reference frames; ")
    print(f"noise: {len(noises)} OpenSFX recordings, {sum(len(x) for _, x in noises) / RATE:.0f} s, looped\n")
    cases: list[tuple[str, np.ndarray, np.ndarray]] = [("clean speech", speech, ref)]
    for snr in SNRS:
        noise = noise_track(noises, len(speech), SPEECH_DBFS - snr)
        cases.append((f"speech + noise {snr} dB", speech + noise, ref))
    for level in (-43, -33, -23):
        noise = noise_track(noises, len(speech), level)
        cases.append((f"noise only {level} dBFS", noise, np.zeros_like(ref)))
    names = [name for name, _ in SETTINGS]
    print("missed % / open % / false starts per min / end lag ms (median)\n")
    print("| audio | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, x, r in cases:
        cells = []
        for _, settings in SETTINGS:
            found = utterances(x, settings, silero)
            if r.any():
                m = score(found, r, ends, gaps)
                cells.append(
                    f"{m['missed %']:.1f} / {m['open %']:.0f} / {m['false /min']:.1f} / {m['end lag ms']:.0f}"
                )
            else:
                m = score(found, r, [], np.ones(len(r), bool))
                cells.append(f"– / {m['open %']:.0f} / {m['false /min']:.1f} / –")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def _spans(ref: np.ndarray, ends: list[int]) -> list[slice]:
    """Each clip's frames: from its first reference frame to its last (``ends``)."""
    spans, start = [], 0
    for end in ends:
        first = start + int(np.flatnonzero(ref[start:end])[0])
        spans.append(slice(first, end))
        start = end
    return spans


def feed_all(subjects: list[Subject[Frame]], streams: list[list[AudioChunk]], rounds: int) -> None:
    for r in range(rounds):
        for subject, stream in zip(subjects, streams, strict=True):
            subject.on_next(stream[r % len(stream)])


async def feed_ticks(
    subjects: list[Subject[Frame]], streams: list[list[AudioChunk]], rounds: int, per: int, silero: SileroVad
) -> None:
    for r in range(rounds):
        for i in range(0, len(subjects), per):
            for subject, stream in zip(subjects[i : i + per], streams[i : i + per], strict=True):
                subject.on_next(stream[r % len(stream)])
            await asyncio.sleep(0)  # a flight takes off in the next tick
    for _ in range(600_000):  # the last flights land (at most 10 minutes)
        if silero.batcher().idle:
            break
        await asyncio.sleep(0.001)


def cpu_case(
    mode: str, n: int, seconds: float, audio: np.ndarray, silero: SileroVad
) -> tuple[float, float, float]:
    """CPU µs per 20 ms frame of audio (all threads, and the event loop's thread alone), and
    the mean batch size (batched modes)."""
    engine = "webrtc" if mode == "webrtc" else "silero"
    subjects: list[Subject[Frame]] = [Subject() for _ in range(n)]
    for subject in subjects:
        subject.pipe(vad_gate(engine=engine, silero=silero)).subscribe(lambda _f: None)
    size = RATE // 10
    streams = []
    for i in range(n):
        offset = (i * 7919 * size) % (len(audio) - 20 * size)
        streams.append(chunks(audio[offset : offset + (int(seconds * 10) + 1) * size], size, 0))
    rounds = int(seconds * 10)
    batcher = silero.batcher()
    batcher.batches = batcher.windows = 0
    t0, l0 = time.process_time(), time.thread_time()
    if mode.startswith("silero batched"):
        per = n if mode == "silero batched" else int(mode.rsplit(" ", 1)[1])
        asyncio.run(feed_ticks(subjects, streams, rounds, per, silero))
    else:
        feed_all(subjects, streams, rounds)
    cpu, loop = time.process_time() - t0, time.thread_time() - l0
    frames = n * rounds * 5
    for subject in subjects:
        subject.on_completed()
    return cpu / frames * 1e6, loop / frames * 1e6, batcher.windows / max(1, batcher.batches)


def cpu(args: argparse.Namespace, silero: SileroVad) -> None:
    speech, _, _ = layout(speech_clips(args.prompts), silero)
    noises = noise_clips()
    audio = speech + noise_track(noises, len(speech), SPEECH_DBFS - 10)
    modes = ["webrtc", "silero (1 call/window)", "silero batched", "silero batched per tick 16"]
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for rep in range(args.repeat):
        for n in args.sessions:
            for mode in modes if rep % 2 == 0 else modes[::-1]:
                results.setdefault((mode, n), []).append(cpu_case(mode, n, args.seconds, audio, silero))
                print(f"  [{rep}] {mode} N={n}: {results[mode, n][-1][0]:.1f} µs/frame", file=sys.stderr)
    print(
        "\n| engine | N sessions | CPU µs per 20 ms frame, best (runs) | of it on the event loop "
        "| mean batch | cores, 1000 sessions |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for n in args.sessions:
        for mode in modes:
            runs = results[mode, n]
            best = min(runs)
            each = " / ".join(f"{r[0]:.1f}" for r in runs)
            batch = f"{best[2]:.0f}" if mode.startswith("silero batched") else "–"
            cores = best[0] * 50 * 1000 / 1e6
            print(f"| {mode} | {n} | {best[0]:.1f} ({each}) | {best[1]:.1f} | {batch} | {cores:.2f} |")


def per_call(silero: SileroVad) -> None:
    model = silero.model()
    print("\n| Silero batch rows | CPU µs per call | CPU µs per window |")
    print("|---:|---:|---:|")
    for b in (1, 2, 8, 32, 128):
        x = np.random.default_rng(0).standard_normal((b, 576)).astype(np.float32) * 0.1
        state = np.zeros((2, b, 128), np.float32)
        calls = max(20, 2000 // b)
        for _ in range(10):
            model.run(x, state, RATE)
        t0 = time.process_time()
        for _ in range(calls):
            model.run(x, state, RATE)
        per = (time.process_time() - t0) / calls * 1e6
        print(f"| {b} | {per:.0f} | {per / b:.1f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[300, 1000])
    ap.add_argument("--seconds", type=float, default=2.0, help="audio per session in the CPU runs")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=60, help="asterisk prompts (the longest) to use")
    ap.add_argument("--skip", choices=("quality", "cpu"), action="append", default=[])
    args = ap.parse_args(argv)
    silero = SileroVad()
    print(f"load before: {uptime()}")
    per_call(silero)
    if "quality" not in args.skip:
        quality(args, silero)
    if "cpu" not in args.skip:
        cpu(args, silero)
    print(f"\nload after: {uptime()}")


if __name__ == "__main__":
    main()
