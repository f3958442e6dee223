#!/usr/bin/env python3
"""Partials that settle (issue 25, item 3): how soon, how far behind, how often rewritten.

    python tests/perf/bench_partials.py [--rounds 3] [--setups before after beam5 off] [--frame-ms 100]

One WebSocket talker streams, at real-time pace in PCM16 frames, the five English fixture
sentences (synthetic) and the eight alsa-utils recordings (real speech, resampled to 16 kHz),
1.5 s of room tone apart, with VAD endpointing (500 ms hangover) and whisper tiny.en (int8;
finals beam 5). Per utterance and per message, from the client's clock:

* **first partial** = receive(first ``transcript.partial`` of the utterance) − send(frame
  holding the utterance's true speech start);
* **partial lag** = receive(partial) − send(frame holding the partial's ``end``): how far the
  shown text trails the audio it covers;
* **rewritten** = the share of partial words the next partial (or, after the last one, the
  final) of the same utterance did not keep: a word is kept when it is in the common word
  prefix of the two texts (case and punctuation ignored);
* **final vs stable** = utterances whose final does not begin with the last partial's ``stable``
  words, and the share of stable words the final changed (the final decode is authoritative);
* **end of speech → final** = receive(``transcript.final``) − send(frame holding the true end
  of the last utterance its audio reaches into: the VAD may join two short recordings into one),
  the 500 ms hangover included;
* WER of the finals against the fixtures' texts; engine calls (``/metrics``); hub CPU.

Set-ups, each its own hub subprocess, all running for the whole benchmark and taking turns in
a rotating order each round (the machine is shared):

``before``  the old partials: a snapshot every 1 s of stream time, no stable prefix
            (``limits.partial_interval_s = 1.0``, ``limits.stable_partials = false``);
``after``   the defaults: a snapshot every 0.25 s, the next decode as soon as the previous
            ended, stable prefixes (LocalAgreement); partials greedy (``partial_beam_size = 1``);
``beam5``   the defaults with partials decoded with beam 5 like finals;
``off``     partials off (``"partials": false`` in the session config), on the ``after`` hub:
            the finals' own latency, for reference.

Then (``--decode-repeat``, 0 to skip) partial decodes in this process, greedy vs beam 5,
interleaved, on snapshots of the English fixtures cut every second: time per decode, and the
words of each guess that are not in the final's word prefix.

The 1-minute load average (``os.getloadavg``, what ``uptime`` shows) is printed before each
run and in each row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import scrape
from common import RATE, SPEECH_FIXTURES, Sampler, Server, Table, percentile, print_tables

from asrhub.engine.local_agreement import agrees, common_prefix
from tests import audio_utils as au

SOUNDS = Path("/usr/share/sounds/alsa")
REAL = {
    "Front_Center.wav": "front center",
    "Front_Left.wav": "front left",
    "Rear_Right.wav": "rear right",
    "Side_Left.wav": "side left",
    "Front_Right.wav": "front right",
    "Rear_Center.wav": "rear center",
    "Rear_Left.wav": "rear left",
    "Side_Right.wav": "side right",
}
GAP_S = 1.5
HANGOVER_MS = 500
SETUPS = ("before", "after", "beam5", "off")
HUB_ENV = {
    "before": {"ASRHUB_LIMITS__PARTIAL_INTERVAL_S": "1.0", "ASRHUB_LIMITS__STABLE_PARTIALS": "false"},
    "after": {},
    "beam5": {"ASRHUB_PROVIDERS__WHISPER__PARTIAL_BEAM_SIZE": "5"},
}
HUB_OF = {"before": "before", "after": "after", "beam5": "beam5", "off": "after"}
LABELS = {
    "before": "before: 1 s snapshots, no stable prefix",
    "after": "after: 0.25 s, next decode at once, stable prefix (defaults)",
    "beam5": "after, partials with beam 5",
    "off": "partials off (reference)",
}


@dataclass(frozen=True)
class Talk:
    pcm: bytes
    utterances: tuple[tuple[float, float], ...]
    texts: tuple[str, ...]
    duration_s: float


def speech_span(samples: np.ndarray) -> tuple[float, float]:
    """First and last 10 ms whose energy is above -40 dBFS (the alsa recordings have no labels)."""
    hop = RATE // 100
    frames = samples[: len(samples) // hop * hop].reshape(-1, hop)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 0.01)
    return float(loud[0] * hop / RATE), float((loud[-1] + 1) * hop / RATE)


def talk(fixtures: tuple[str, ...] = SPEECH_FIXTURES, real: tuple[str, ...] = tuple(REAL)) -> Talk:
    parts = [au.room_noise(1.0, seed=0, level_db=-70.0)]
    t = 1.0
    utterances: list[tuple[float, float]] = []
    texts: list[str] = []
    clips: list[tuple[np.ndarray, tuple[float, float], str]] = []
    for name in fixtures:
        clip, rate = au.load_wav(au.fixture(name))
        entry = au.fixture_entry(name)
        span = (float(entry["segments"][0]["start"]), float(entry["segments"][-1]["end"]))
        clips.append((clip, span, str(entry["text"])))
    for name in real:
        text = REAL[name]
        raw, rate = au.load_wav(SOUNDS / name)
        clip = resample_poly(raw, RATE, rate).astype(np.float32)
        clips.append((clip, speech_span(clip), text))
    for i, (clip, (s, e), text) in enumerate(clips):
        if i:
            parts.append(au.room_noise(GAP_S, seed=2 + i, level_db=-70.0))
            t += GAP_S
        utterances.append((t + s, t + e))
        texts.append(text)
        parts.append(clip)
        t += len(clip) / RATE
    parts.append(au.room_noise(1.5, seed=1, level_db=-70.0))
    x = np.concatenate(parts)
    return Talk(au.pcm16_bytes(x), tuple(utterances), tuple(texts), len(x) / RATE)


@dataclass
class Run:
    sent_at: list[float] = field(default_factory=list)
    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    late: int = 0


async def stream(url: str, audio: Talk, config: dict[str, Any], frame_ms: int) -> Run:
    run = Run()
    frame_bytes = RATE * frame_ms // 1000 * 2
    frame_s = frame_ms / 1000
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        closed = asyncio.Event()

        async def reader() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    ev = json.loads(msg.data)
                    run.events.append((time.monotonic(), ev))
                    if ev.get("type") == "session.closed":
                        break
            closed.set()

        task = asyncio.create_task(reader())
        await ws.send_str(json.dumps({"type": "session.start", "config": config}))
        t0 = time.monotonic()
        for k, off in enumerate(range(0, len(audio.pcm), frame_bytes)):
            delay = t0 + k * frame_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > frame_s:
                run.late += 1
            run.sent_at.append(time.monotonic())
            await ws.send_bytes(audio.pcm[off : off + frame_bytes])
        await ws.send_str('{"type": "session.end"}')
        await asyncio.wait_for(closed.wait(), 120)
        await task
    return run


def analyse(run: Run, audio: Talk, frame_ms: int) -> dict[str, Any]:
    frame_bytes = RATE * frame_ms // 1000 * 2

    def sent(stream_s: float) -> float:
        k = int(stream_s * RATE) * 2 // frame_bytes
        return run.sent_at[k] if 0 <= k < len(run.sent_at) else math.nan

    def utterance(start: float, end: float) -> int:
        overlaps = [min(u[1], end) - max(u[0], start) for u in audio.utterances]
        return int(np.argmax(overlaps))

    partials: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    finals: dict[int, tuple[float, dict[str, Any]]] = {}
    for t, ev in run.events:
        if ev.get("type") == "transcript.partial":
            partials.setdefault(ev["segment_id"], []).append((t, ev))
        elif ev.get("type") == "transcript.final":
            finals[ev["segment_id"]] = (t, ev)
    first: dict[int, float] = {}
    lags: list[float] = []
    words = rewritten = stable_words = stable_changed = final_disagrees = with_stable = 0
    stable_shown = stable_rewritten = 0
    for sid, items in partials.items():
        lags += [t - sent(ev["end"] - 1e-3) for t, ev in items]
        u = utterance(items[0][1]["start"], items[0][1]["end"])
        first.setdefault(u, items[0][0] - sent(audio.utterances[u][0]))
        final_text = finals[sid][1]["text"] if sid in finals else ""
        texts = [ev["text"].split() for _, ev in items] + [final_text.split()]
        for a, b in pairwise(texts):
            words += len(a)
            rewritten += len(a) - common_prefix(a, b)
        for (_, a), (_, b) in pairwise(items):  # stable words a later partial changed (verbatim)
            sa, sb = (a.get("stable") or "").split(), (b.get("stable") or "").split()
            stable_shown += len(sa)
            stable_rewritten += len(sa) - next(
                (i for i, (x, y) in enumerate(zip(sa, sb, strict=False)) if x != y), min(len(sa), len(sb))
            )
        stable = items[-1][1].get("stable")
        if stable:
            with_stable += 1
            s = stable.split()
            stable_words += len(s)
            stable_changed += len(s) - common_prefix(s, final_text.split())
            final_disagrees += not agrees(stable, final_text)
    e2e = []
    for t, ev in finals.values():
        if ev["text"]:  # the last utterance the final's audio reaches into (the VAD may join two)
            last = max(i for i, u in enumerate(audio.utterances) if u[0] < ev["end"])
            e2e.append(t - sent(audio.utterances[last][1]))
    hyp = " ".join(ev["text"] for _, ev in sorted(finals.values(), key=lambda f: f[1]["segment_id"]))
    return {
        "first_partial_s": [first[u] for u in sorted(first)],
        "utterances_with_partials": len(first),
        "lag_s": lags,
        "partials": sum(len(v) for v in partials.values()),
        "words": words,
        "rewritten": rewritten,
        "with_stable": with_stable,
        "stable_words": stable_words,
        "stable_changed": stable_changed,
        "stable_shown": stable_shown,
        "stable_rewritten": stable_rewritten,
        "final_texts": [ev["text"] for _, ev in sorted(finals.values(), key=lambda f: f[1]["segment_id"])],
        "final_disagrees": final_disagrees,
        "e2e_s": e2e,
        "finals": len(e2e),
        "wer": au.wer(" ".join(audio.texts), hyp),
        "late_frames": run.late,
    }


def one(server: Server, setup: str, audio: Talk, frame_ms: int) -> dict[str, Any]:
    config: dict[str, Any] = {"language": "en", "vad": {"silence_ms": HANGOVER_MS}}
    if setup == "off":
        config["partials"] = False
    calls0 = scrape(server, "asrhub_inference_seconds_count")
    engine0 = scrape(server, "asrhub_inference_seconds_sum")
    load = os.getloadavg()[0]
    with Sampler(server.ps) as sampler:
        t0 = time.monotonic()
        run = asyncio.run(stream(server.url, audio, config, frame_ms))
        t1 = time.monotonic()
    row = analyse(run, audio, frame_ms)
    row.update(
        setup=setup,
        load1=load,
        engine_calls=scrape(server, "asrhub_inference_seconds_count") - calls0,
        engine_s=scrape(server, "asrhub_inference_seconds_sum") - engine0,
        hub_cpu_pct=sampler.window(t0, t1)[0],
        machine_busy_pct=sampler.machine_busy(t0, t1),
    )
    return row


def summarize(rows: list[dict[str, Any]], setups: tuple[str, ...], n_utts: int) -> Table:
    table = Table(
        "Partials that settle: one real-time talker, whisper tiny.en (13 utterances per run)",
        [
            "set-up",
            "runs",
            "first partial p50 s",
            "utterances with a partial",
            "partial lag p50 s",
            "p95 s",
            "partials",
            "words rewritten",
            "stable words a later partial changed",
            "finals ≠ stable",
            "stable words the final changed",
            "speech end → final p50 s",
            "p95 s",
            "WER",
            "engine calls / run",
            "engine s / run",
            "hub CPU %",
            "load (1 min)",
        ],
    )
    for setup in setups:
        mine = [r for r in rows if r["setup"] == setup]
        if not mine:
            continue

        def cat(key: str, rs: list[dict[str, Any]] = mine) -> list[float]:
            return [v for r in rs for v in r[key]]

        def tot(key: str, rs: list[dict[str, Any]] = mine) -> int:
            return int(sum(r[key] for r in rs))

        words = tot("words")
        stable = tot("stable_words")
        table.rows.append(
            [
                LABELS[setup],
                len(mine),
                percentile(cat("first_partial_s"), 50),
                f"{tot('utterances_with_partials')}/{n_utts * len(mine)}",
                percentile(cat("lag_s"), 50),
                percentile(cat("lag_s"), 95),
                tot("partials"),
                f"{tot('rewritten')}/{words} ({100 * tot('rewritten') / words:.1f} %)" if words else "–",
                f"{tot('stable_rewritten')}/{tot('stable_shown')}" if setup not in ("before", "off") else "–",
                f"{tot('final_disagrees')}/{tot('with_stable')}" if setup not in ("before", "off") else "–",
                f"{tot('stable_changed')}/{stable}" if stable else "–",
                percentile(cat("e2e_s"), 50),
                percentile(cat("e2e_s"), 95),
                f"{sum(r['wer'] for r in mine) / len(mine):.3f}",
                sum(r["engine_calls"] for r in mine) / len(mine),
                sum(r["engine_s"] for r in mine) / len(mine),
                sum(r["hub_cpu_pct"] for r in mine) / len(mine),
                " ".join(f"{r['load1']:.1f}" for r in mine),
            ]
        )
    table.notes.append(
        "words rewritten: partial words the next partial (or the final) did not keep in its "
        "common prefix (case and punctuation ignored) — with stable prefixes, all of them in the "
        "unstable tail; stable words a later partial changed: verbatim, summed over consecutive "
        "partials; finals ≠ stable: utterances whose final does not begin with the last "
        "partial's stable words. Load: 1-minute load average before each run (2 cores)."
    )
    return table


def decode_cost(repeat: int) -> Table:
    """Partial decodes in process, greedy vs beam 5 (no word times, as partials are decoded),
    interleaved: snapshots like a talker's partials decode (each English fixture cut every 1 s)."""
    from asrhub.providers.whisper_decode import WhisperDecoder
    from asrhub.providers.whisper_model import WhisperSettings, load_model, model_source

    model = load_model(WhisperSettings(), model_source(WhisperSettings()))
    decoders = {beam: WhisperDecoder(model, WhisperSettings(partial_beam_size=beam)) for beam in (1, 5)}
    times: dict[int, list[float]] = {1: [], 5: []}
    rewritten = {1: 0, 5: 0}
    words = {1: 0, 5: 0}
    for name in SPEECH_FIXTURES:
        clip, _ = au.load_wav(au.fixture(name))
        final = decoders[5].decode(clip, "en", None, final=True).text.split()
        for end in np.arange(1.0, len(clip) / RATE, 1.0):
            snap = clip[: int(end * RATE)]
            for _ in range(repeat):
                for beam in (1, 5) if len(times[1]) % 2 == 0 else (5, 1):
                    t = time.perf_counter()
                    text = decoders[beam].decode(snap, "en", None, final=False).text.split()
                    times[beam].append(time.perf_counter() - t)
            for beam in (1, 5):  # how far each guess is from the final (the last decode's words)
                text = decoders[beam].decode(snap, "en", None, final=False).text.split()
                words[beam] += len(text)
                rewritten[beam] += len(text) - common_prefix(text, final)
    table = Table(
        "Partial decodes in process, whisper tiny.en int8: greedy vs beam 5 (English fixtures, "
        "a snapshot every 1 s)",
        ["partial decode", "decodes", "p50 ms", "p95 ms", "words not in the final's prefix", "load (1 min)"],
    )
    for beam in (1, 5):
        table.rows.append(
            [
                "greedy (beam 1, the default)" if beam == 1 else "beam 5 (as finals)",
                len(times[beam]),
                1000 * percentile(times[beam], 50),
                1000 * percentile(times[beam], 95),
                f"{rewritten[beam]}/{words[beam]}",
                f"{os.getloadavg()[0]:.1f}",
            ]
        )
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    ap.add_argument("--frame-ms", type=int, default=100)
    ap.add_argument("--decode-repeat", type=int, default=2, help="greedy vs beam 5 in process (0: skip)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    setups = tuple(args.setups)
    audio = talk()
    print(f"uptime: {os.popen('uptime').read().strip()}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    servers: dict[str, Server] = {}
    try:
        for hub in dict.fromkeys(HUB_OF[s] for s in setups):
            server = Server("hub", provider="whisper", env=HUB_ENV[hub])
            servers[hub] = server.__enter__()
            asyncio.run(stream(server.url, talk_warmup(), {"language": "en"}, 100))
        for i in range(args.rounds):
            order = setups[i % len(setups) :] + setups[: i % len(setups)]
            for setup in order:
                row = one(servers[HUB_OF[setup]], setup, audio, args.frame_ms)
                rows.append(row)
                print(
                    f"  round {i + 1} {setup}: first partial p50 "
                    f"{percentile(row['first_partial_s'], 50):.2f} s, lag p50 "
                    f"{percentile(row['lag_s'], 50):.2f} s, rewritten {row['rewritten']}/{row['words']}, "
                    f"final p50 {percentile(row['e2e_s'], 50):.2f} s, WER {row['wer']:.3f}, "
                    f"load {row['load1']:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)
    print(f"uptime: {os.popen('uptime').read().strip()}", file=sys.stderr)
    tables = [summarize(rows, setups, len(audio.utterances))]
    if args.decode_repeat:
        tables.append(decode_cost(args.decode_repeat))
    print(f"uptime: {os.popen('uptime').read().strip()}", file=sys.stderr)
    print_tables(tables)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


def talk_warmup() -> Talk:
    """One short sentence, to load the model before the first measured run."""
    clip, _ = au.load_wav(au.fixture("quick_fox.wav"))
    x = np.concatenate([clip, au.room_noise(1.0, level_db=-70.0)])
    return Talk(au.pcm16_bytes(x), ((0.3, 3.05),), ("",), len(x) / RATE)


if __name__ == "__main__":
    main()
