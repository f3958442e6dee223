#!/usr/bin/env python3
"""Diarization (issue 26): error rate, speaker count, word-level accuracy, files and live, on
conversations of real people (``tests/speakers.py``), with CPU cost and the delay per final.

    python tests/perf/bench_diarization.py [--per-set 10] [--words 6] [--seed 200] [--encoder ge2e]

Sets (seeds from ``--seed``, none of them the threshold-tuning seeds 0–9):

* ``2spk`` / ``3spk``: turns of 2–5 s, pauses of 0.3–0.8 s, no overlap (the goals' set);
* ``4spk``: four people, ten turns;
* ``overlap``: 2–3 people, every other turn starting 0.3–1.0 s before the previous one ends;
* ``short``: 2–3 people, turns of 0.8–1.5 s.

File diarization (``Diarizer.diarize``) on every conversation: DER (pyannote-metrics, no collar,
and with a 0.25 s collar each side), the right speaker count, CPU seconds per audio minute.
Then ``--words`` conversations of each non-overlap set through one in-process hub (whisper
tiny.en): the file path (``transcribe_samples(diarize=True)``) and a live session (``diarize``,
``vad.silence_ms`` 250, fed as fast as the session takes it): word-level speaker accuracy of
each against the reference (word middle; best one-to-one label mapping), live-vs-file agreement
on the live words, and the embedding time of each live final (the most a final waits for its
label: segmentation-3.0 and the embeddings of the utterance's voices, wall and thread CPU time).
The load (``uptime``) is printed with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from asrhub.diarize.assign import speaker_at
from asrhub.diarize.diarizer import Diarizer
from asrhub.diarize.encoder import DEFAULT, TUNINGS
from asrhub.frames import FinalTranscript
from asrhub.settings.schema import Settings
from tests.audio_utils import pcm16_bytes
from tests.speakers import Conversation, conversation

warnings.filterwarnings("ignore", message=".*uem.*")


def sets(per_set: int, seed: int) -> dict[str, list[Conversation]]:
    s = seed
    out: dict[str, list[Conversation]] = {"2spk": [], "3spk": [], "4spk": [], "overlap": [], "short": []}
    for i in range(per_set):
        out["2spk"].append(conversation(s + i, 2))
        out["3spk"].append(conversation(s + 100 + i, 3))
        out["4spk"].append(conversation(s + 200 + i, 4, turns=10))
        out["overlap"].append(conversation(s + 300 + i, 2 + i % 2, overlap_s=(0.3, 1.0)))
        out["short"].append(conversation(s + 400 + i, 2 + i % 2, turns=12, turn_s=(0.8, 1.5)))
    return out


def annotation(items: list[tuple[float, float, Any]]) -> Annotation:
    a = Annotation()
    for start, end, label in items:
        if end > start:
            a[Segment(start, end)] = label
    return a


def accuracy(pairs: list[tuple[Any, Any]]) -> float:
    """Share of (reference, label) pairs that agree under the best one-to-one label mapping."""
    pairs = [(r, h) for r, h in pairs if r is not None and h is not None]
    if not pairs:
        return float("nan")
    refs = sorted({r for r, _ in pairs}, key=str)
    hyps = sorted({h for _, h in pairs}, key=str)
    best = 0
    slots = refs + [None] * max(0, len(hyps) - len(refs))
    for perm in itertools.permutations(slots, len(hyps)):
        mapping = dict(zip(hyps, perm, strict=True))
        best = max(best, sum(1 for r, h in pairs if mapping[h] == r))
    return best / len(pairs)


def file_scores(diarizer: Diarizer, convs: list[Conversation]) -> dict[str, float]:
    der0, der25 = DiarizationErrorRate(), DiarizationErrorRate(collar=0.5)
    right, cpu, audio = 0, 0.0, 0.0
    for c in convs:
        t = time.process_time()
        turns = diarizer.diarize(c.samples)
        cpu += time.process_time() - t
        audio += c.duration
        ref = annotation(list(c.reference))
        hyp = annotation([(x.start, x.end, x.speaker) for x in turns])
        uem = Segment(0, c.duration)
        der0(ref, hyp, uem=uem)
        der25(ref, hyp, uem=uem)
        right += len({x.speaker for x in turns}) == len(c.speakers)
    return {
        "der": abs(der0),
        "der_collar": abs(der25),
        "count": right / len(convs),
        "cpu_per_min": cpu / audio * 60,
    }


async def word_scores(
    convs: list[Conversation], live_threshold: float | None = None, encoder: str = DEFAULT
) -> dict[str, float]:
    import msgspec

    from asrhub.api import open_hub, transcribe_samples

    settings = Settings()
    diarization = msgspec.structs.replace(
        settings.diarization, encoder=encoder, live_threshold=live_threshold
    )
    settings = msgspec.structs.replace(settings, diarization=diarization)
    file_acc, live_acc, agree, embeds, cpus = [], [], [], [], []
    live = [False]
    async with open_hub(settings) as hub:
        diarizer = hub.speakers.get()
        original = diarizer.voices

        def timed(samples: Any) -> Any:
            t, cpu = time.perf_counter(), time.thread_time()
            try:
                return original(samples)
            finally:
                if live[0]:  # the file path's count check calls it too
                    embeds.append(time.perf_counter() - t)
                    cpus.append(time.thread_time() - cpu)

        diarizer.voices = timed  # type: ignore[method-assign]
        for c in convs:
            result = await transcribe_samples(hub, c.samples, diarize=True)
            words = [w for s in result.segments for w in s.words or ()]
            file_acc.append(accuracy([(c.speaker_at((w.start + w.end) / 2), w.speaker) for w in words]))
            file_turns = await asyncio.to_thread(hub.speakers.get().diarize, c.samples)
            session = await hub.open_async({"diarize": True, "partials": False, "vad": {"silence_ms": 250}})
            finals: list[FinalTranscript] = []

            async def read(session: Any = session, finals: list[FinalTranscript] = finals) -> None:
                async for e in session.iter_events():
                    if isinstance(e, FinalTranscript):
                        finals.append(e)

            reader = asyncio.create_task(read())
            live[0] = True
            data = pcm16_bytes(c.samples)
            for i in range(0, len(data), 6400):
                await session.feed(data[i : i + 6400])
            await session.end()
            await reader
            live[0] = False
            live_words = [w for f in finals for w in f.words or ()]
            live_acc.append(accuracy([(c.speaker_at((w.start + w.end) / 2), w.speaker) for w in live_words]))
            agree.append(accuracy([(speaker_at(file_turns, w.start, w.end), w.speaker) for w in live_words]))
    ms = sorted(e * 1000 for e in embeds)
    cpu_ms = sorted(e * 1000 for e in cpus)
    return {
        "file_words": statistics.fmean(x for x in file_acc if x == x),
        "live_words": statistics.fmean(x for x in live_acc if x == x),
        "live_vs_file": statistics.fmean(x for x in agree if x == x),
        "embed_p50_ms": ms[len(ms) // 2] if ms else 0.0,
        "embed_p95_ms": ms[int(len(ms) * 0.95)] if ms else 0.0,
        "embed_max_ms": ms[-1] if ms else 0.0,
        "utterances": len(ms),
        "cpu_p50_ms": cpu_ms[len(cpu_ms) // 2] if cpu_ms else 0.0,
        "cpu_p95_ms": cpu_ms[int(len(cpu_ms) * 0.95)] if cpu_ms else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-set", type=int, default=10)
    parser.add_argument("--words", type=int, default=6)
    parser.add_argument("--seed", type=int, default=200)
    parser.add_argument("--live-threshold", type=float, default=None, help="[diarization] live_threshold")
    parser.add_argument("--words-only", action="store_true", help="skip the file-only table")
    parser.add_argument("--encoder", choices=sorted(TUNINGS), default=DEFAULT, help="[diarization] encoder")
    args = parser.parse_args()
    print("uptime:", os.popen("uptime").read().strip(), "| encoder:", args.encoder)
    diarizer = Diarizer.load(encoder=args.encoder)
    data = sets(args.per_set, args.seed)
    print(f"{'set':<8} {'n':>3} {'DER':>6} {'DER±.25':>8} {'count ok':>9} {'CPU s/audio min':>16}")
    for name, convs in ({} if args.words_only else data).items():
        r = file_scores(diarizer, convs)
        print(
            f"{name:<8} {len(convs):>3} {r['der']:>6.1%} {r['der_collar']:>8.1%} {r['count']:>9.0%}"
            f" {r['cpu_per_min']:>16.2f}"
        )
    print("uptime:", os.popen("uptime").read().strip())
    if args.words:
        convs = data["2spk"][: args.words // 2] + data["3spk"][: args.words - args.words // 2]
        r = asyncio.run(word_scores(convs, args.live_threshold, args.encoder))
        print(
            f"words ({len(convs)} conversations, whisper tiny.en): file {r['file_words']:.1%}, "
            f"live {r['live_words']:.1%}, live agrees with file {r['live_vs_file']:.1%}"
        )
        print(
            f"segmentation + embeddings per live final ({r['utterances']} utterances): "
            f"p50 {r['embed_p50_ms']:.0f} ms, p95 {r['embed_p95_ms']:.0f} ms, "
            f"max {r['embed_max_ms']:.0f} ms of wall time; "
            f"CPU p50 {r['cpu_p50_ms']:.0f} ms, p95 {r['cpu_p95_ms']:.0f} ms"
        )
        print("uptime:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
