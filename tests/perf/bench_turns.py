#!/usr/bin/env python3
"""Turn-taking (issue 25): end of speech → final, and sentences cut in two at a mid-sentence pause,
with semantic end of turn against silence endpointing; ``session.end`` → last final against the
engine's own time.

    python tests/perf/bench_turns.py [--rounds 2] [--k 1 4] [--skip-flush] [--fast]

One in-process hub (whisper tiny.en, the provider's defaults) serves every mode; the modes take
turns item by item within each round (who goes first rotates), so the shared machine's load falls
on them alike. The test set is tests/perf/turn_set.py: sentences with a 0.4–0.8 s pause inserted
after a function word near their middle, and complete short turns ("Yes.", "Stop.", the ALSA
recordings). Modes (session ``turn_detection`` / ``vad``):

``semantic``  ``{"type": "semantic", "eagerness": "auto"}`` (200 ms short silence, 2 s at most)
``short``     silence endpointing with the same 200 ms hangover (``vad.silence_ms = 200``)
``default``   today's default: silence endpointing, ``vad.silence_ms = 500``
``semantic-late``  ``semantic`` with the early final started at the short silence itself (as
              before it started at half of it: ``vad_gate.EARLY_SHARE``), for an A/B in one run

Each of K sessions streams the items at real-time pace in 100 ms PCM16 frames (K > 1: the
sessions start 0.3 s apart, each with the items in another order), partials on. Per item:
``end of speech → final`` = receive(the final covering the end of the speech) − send(the frame
holding the end of the speech); ``cut`` = a paused sentence that produced more than one final;
``silence waited`` (short turns) = the end of the final's audio − the end of the speech, in stream
seconds (the hangover the turn detection chose, independent of the feed speed and of the
machine's load): a complete turn held for the long silence is a *false hold*.
``session.end`` part: each English fixture sentence (0.5 s of room tone before, 0.3 s after, so the
VAD has not ended it) streamed at real time, then ``session.end``; the time to its final against
the same audio decoded by faster-whisper directly, as the provider calls it
(tests/perf/whisper_direct.py). ``uptime`` is printed before and after each part.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from turn_set import RATE, Item, build

from asrhub.config import Limits
from asrhub.frames import FinalTranscript
from asrhub.hub import Hub
from asrhub.operators import vad_gate as vad_gate_module
from asrhub.providers.whisper import WhisperProvider
from asrhub.wiring import build_hub
from tests import audio_utils as au

FRAME_S = 0.1
MODES: dict[str, dict[str, Any]] = {
    "semantic": {"turn_detection": {"type": "semantic", "eagerness": "auto"}},
    "short": {"turn_detection": {"type": "silence"}, "vad": {"silence_ms": 200}},
    "default": {"turn_detection": {"type": "silence"}},
    "semantic-late": {"turn_detection": {"type": "semantic", "eagerness": "auto"}},
}
DEFAULT_EARLY_SHARE = vad_gate_module.EARLY_SHARE
EARLY_SHARE = {"semantic-late": 1.0}
"""Modes that start the early final elsewhere than ``vad_gate.EARLY_SHARE`` (``semantic-late``:
at the short silence itself, as before the early start; for an A/B in one run — the modes take
turns one talker group at a time, so the module value is set for each group's sessions)."""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


VERDICTS: list[str] = []
"""The turn model's verdicts since the last item (``-v``: printed with it)."""


def record_verdicts() -> None:
    """Keep each verdict of the semantic end of turn (its probability, the text it read)."""
    from asrhub.operators._turn_end import TurnEnd

    judge = TurnEnd._judge

    async def judged(self: TurnEnd, *args: Any) -> bool:
        finished: bool = await judge(self, *args)
        last = getattr(self, "last", None)
        VERDICTS.append(
            f"p={last[0]:.2f} {last[1]!r}→{'end' if finished else 'wait'}" if last else str(finished)
        )
        return finished

    TurnEnd._judge = judged  # type: ignore[method-assign]


SPEED = 1.0
"""Stream time per wall second (``--speed``; latencies mean something only at 1)."""


async def stream(
    hub: Hub, config: dict[str, Any], items: list[Item], delay: float = 0.0
) -> list[dict[str, Any]]:
    """One real-time session over ``items``; per item: latency and number of finals."""
    await asyncio.sleep(delay)
    session = hub.open({"provider": "whisper", "language": "en", **config})
    finals: list[tuple[float, FinalTranscript]] = []
    session.events.subscribe(
        lambda e: finals.append((time.monotonic(), e)) if isinstance(e, FinalTranscript) else None
    )
    audio = np.concatenate([i.audio for i in items])
    offsets = np.cumsum([0] + [len(i.audio) for i in items]) / RATE
    step = int(FRAME_S * RATE)
    pcm = au.pcm16_bytes(audio)
    sent_at: dict[int, float] = {}
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(audio), step)):
        await asyncio.sleep(max(0.0, t0 + k * FRAME_S / SPEED - time.monotonic()))
        await session.feed(pcm[2 * i : 2 * (i + step)])
        sent_at[k] = time.monotonic()
    await session.end()
    out = []
    for item, offset in zip(items, offsets, strict=False):
        end = offset + item.speech_end
        inside = [
            f for _, f in finals if offset <= f.start < offset + len(item.audio) / RATE and f.text.strip()
        ]
        got = [t for t, f in finals if f.start <= end <= f.end + 0.3]
        frame = int(end / FRAME_S)
        latency = got[0] - sent_at[frame] if got and frame in sent_at else None
        closing = [f for _, f in finals if f.start <= end <= f.end + 0.3]
        hold = closing[0].end - end if closing else None  # stream seconds: the silence waited
        out.append(
            {
                "item": item.name,
                "kind": item.kind,
                "finals": len(inside),
                "latency": latency,
                "hold": hold,
                "text": " | ".join(f.text for f in inside),
            }
        )
    return out


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, q)) if xs else float("nan")


async def talkers(hub: Hub, items: list[Item], k: int, rounds: int, verbose: bool) -> None:
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    print(f"\n## K={k} real-time talkers, {rounds} round(s), {len(items)} items each; {uptime()}", flush=True)
    names = list(MODES)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for item_index in range(len(items)):
            for mode in order:
                chosen = [items[(item_index + j * 7) % len(items)] for j in range(k)]
                vad_gate_module.EARLY_SHARE = EARLY_SHARE.get(mode, DEFAULT_EARLY_SHARE)
                try:
                    runs = await asyncio.gather(
                        *[stream(hub, MODES[mode], [chosen[j]], delay=0.3 * j) for j in range(k)]
                    )
                finally:
                    vad_gate_module.EARLY_SHARE = DEFAULT_EARLY_SHARE
                asked, VERDICTS[:] = list(VERDICTS), []
                for run in runs:
                    results[mode] += run
                    if verbose and asked and k == 1:
                        print(f"  {mode:8} {'':22} verdicts: {'; '.join(asked)}")
                    if verbose:
                        for row in run:
                            shown = f"{row['latency'] * 1000:.0f}" if row["latency"] is not None else "-"
                            waited = f"{row['hold'] * 1000:.0f}" if row["hold"] is not None else "-"
                            line = (
                                f"{row['item']:22} finals={row['finals']} {shown:>5} ms "
                                f"hold {waited:>5} ms  {row['text']}"
                            )
                            print(f"  {mode:8} {line}")
        print(f"  round {r + 1} done; {uptime()}", flush=True)
    print(
        "| mode | n | end of speech → final p50 | p95 | paused sentences cut in two | short turns ≤ 1 s "
        "| short turns: silence waited p50 / max | short turns held ≥ 1 s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode, rows in results.items():
        lat = [r["latency"] for r in rows if r["latency"] is not None]
        paused = [r for r in rows if r["kind"] == "paused"]
        cut = sum(r["finals"] > 1 for r in paused)
        short = [r for r in rows if r["kind"] == "short"]
        quick = sum(r["latency"] is not None and r["latency"] <= 1.0 for r in short)
        holds = [r["hold"] for r in short if r["hold"] is not None]
        held = sum(h >= 1.0 for h in holds)
        print(
            f"| {mode} | {len(lat)} | {pct(lat, 50):.0f} ms | {pct(lat, 95):.0f} ms | "
            f"{cut}/{len(paused)} ({100 * cut / max(1, len(paused)):.0f} %) | {quick}/{len(short)} | "
            f"{pct(holds, 50):.0f} / {pct(holds, 100):.0f} ms | {held}/{len(holds)} |"
        )
    print(uptime(), flush=True)


async def flush_part(hub: Hub, rounds: int) -> None:
    """session.end → final, against the engine's own time on the same audio; partials on and
    off, clip by clip (to see what a partial decode still running at the end costs)."""
    import whisper_direct

    model = whisper_direct.load_model(cpu_threads=1)
    print(f"\n## session.end → last final vs the engine's own time; {uptime()}", flush=True)
    ratios: dict[bool, list[float]] = {True: [], False: []}
    hub_ms: dict[bool, list[float]] = {True: [], False: []}
    engine_ms: list[float] = []
    sentences = [e for e in au.manifest()["files"] if e["language"] == "en" and e["kind"] == "utterance"]
    for r in range(rounds):
        for n, entry in enumerate(sentences):
            x, _ = au.load_wav(au.fixture(entry["file"]))
            seg = entry["segments"][0]
            clip = np.concatenate(
                [
                    au.room_noise(0.5, seed=3),
                    x[int(seg["start"] * RATE) : int(seg["end"] * RATE)],
                    au.room_noise(0.3, seed=4),
                ]
            ).astype(np.float32)
            order = (True, False) if (n + r) % 2 == 0 else (False, True)
            for partials in order:
                got = await _end_to_final(hub, clip, partials)
                if got is None:
                    continue
                took, final = got
                start, end = int(final.start * RATE), int(final.end * RATE)
                engine, _text = await asyncio.to_thread(whisper_direct.timed, model, clip[start:end])
                engine_ms.append(engine * 1000)
                ratios[partials].append(took / engine)
                hub_ms[partials].append(took * 1000)
                line = (
                    f"end→final {took * 1000:5.0f} ms  engine {engine * 1000:5.0f} ms  {took / engine:.2f}×"
                )
                print(f"  {entry['file']:22} partials={'on ' if partials else 'off'} {line}", flush=True)
    for partials in (True, False):
        if ratios[partials]:
            print(
                f"session.end → final, partials {'on' if partials else 'off'}: median "
                f"{np.median(hub_ms[partials]):.0f} ms, ratio to the engine's own time median "
                f"{np.median(ratios[partials]):.2f}× (p90 {np.percentile(ratios[partials], 90):.2f}×)"
            )
    print(f"engine's own time median {np.median(engine_ms):.0f} ms; {uptime()}", flush=True)


async def _end_to_final(hub: Hub, clip: np.ndarray, partials: bool) -> tuple[float, FinalTranscript] | None:
    """Stream ``clip`` in real time, then ``session.end``: seconds to its last final."""
    session = hub.open({"provider": "whisper", "language": "en", "partials": partials})
    finals: list[tuple[float, FinalTranscript]] = []
    session.events.subscribe(
        lambda e: finals.append((time.monotonic(), e)) if isinstance(e, FinalTranscript) else None
    )
    step = int(FRAME_S * RATE)
    pcm = au.pcm16_bytes(clip)
    t0 = time.monotonic()
    for k, i in enumerate(range(0, len(clip), step)):
        await asyncio.sleep(max(0.0, t0 + k * FRAME_S - time.monotonic()))
        await session.feed(pcm[2 * i : 2 * (i + step)])
    sent = time.monotonic()
    await session.end()
    if not finals:
        return None
    got, final = finals[-1]
    return got - sent, final


async def main_async(args: argparse.Namespace) -> None:
    print(f"building the test set… {uptime()}", flush=True)
    items = [] if args.only_flush else [i for i in build() if not args.only or args.only in i.name]
    paused = sum(i.kind == "paused" for i in items)
    print(f"{paused} paused sentences, {len(items) - paused} short turns")
    from asrhub.settings.schema import Settings

    if args.verbose:
        record_verdicts()
    hub = build_hub(Settings(limits=Limits()))
    await hub.start()
    provider = hub.providers["whisper"]
    assert isinstance(provider, WhisperProvider)
    try:
        for k in [] if args.only_flush else args.k:
            await talkers(hub, items, k, args.rounds, args.verbose)
        if not args.skip_flush:
            await flush_part(hub, args.rounds)
    finally:
        await hub.shutdown(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--skip-flush", action="store_true")
    parser.add_argument("--only-flush", action="store_true")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), help="only these modes")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--speed", type=float, default=1.0, help="stream this many times real time")
    parser.add_argument("--only", help="items whose name contains this")
    args = parser.parse_args()
    global SPEED
    SPEED = args.speed
    for mode in list(MODES):
        if args.modes and mode not in args.modes:
            del MODES[mode]
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
