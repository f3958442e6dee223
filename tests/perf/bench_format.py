"""Formatting cost per final (issue 27): ``format_final`` — the work the ``format_transcripts``
stage adds on the event loop for each ``transcript.final`` — per config.

Run: ``python tests/perf/bench_format.py [--finals 2000]``. The finals are the English fixture
sentences (tests/fixtures/manifest.json) plus the formatting test sentences (a card number, an
SSN, money, a profanity) as Whisper writes them, 9–30 words each with word times; each config
formats every final in turn, and the script prints mean / p50 / p99 wall µs per final, the
mean CPU µs per final (this thread's CPU time: what a busy machine's preemption does not
inflate) and the machine's load (``uptime``). ``profanity (cold)`` clears the word cache
first (the first final of a session's vocabulary); the other rows run warm, as a session does
after its first finals.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from asrhub.config import FormatConfig
from asrhub.format import format_final
from asrhub.format.profanity import is_profane
from asrhub.frames import FinalTranscript, Word

ROOT = Path(__file__).resolve().parents[2]
HEARD = [  # what tiny.en wrote for tests/format/recordings.py's sentences
    "My card number is 4539 1488 0343 6467.",
    "My social security number is 53622, 7351.",
    "It costs $25 and the rate is 12%.",
    "This is bullshit. What the fuck? Oh shit.",
    "Order twenty five boxes by three thirty p.m. on the twenty third of March.",
    "Send it to ann dot lee at example dot com or call 555-123-4567.",
]
CONFIGS = {
    "none (pass-through)": FormatConfig(),
    "numerals": FormatConfig(numerals=True),
    "redact pci,ssn,numbers,email,phone": FormatConfig(redact=("pci", "ssn", "numbers", "email", "phone")),
    "profanity (warm)": FormatConfig(profanity_filter=True),
    "profanity (cold)": FormatConfig(profanity_filter=True),
    "all of them": FormatConfig(
        numerals=True, profanity_filter=True, redact=("pci", "ssn", "numbers", "email", "phone")
    ),
}


def sentences() -> list[str]:
    manifest = json.loads((ROOT / "tests/fixtures/manifest.json").read_text())
    english = [f["text"] for f in manifest["files"] if f["language"] == "en"]
    return [*english, *HEARD]


def final(i: int, text: str) -> FinalTranscript:
    words = tuple(Word(t, k * 0.3, k * 0.3 + 0.25, 0.9) for k, t in enumerate(text.split()))
    return FinalTranscript(i, text, 0.0, len(words) * 0.3, "whisper", "en", words)


def run(n: int) -> list[tuple[str, float, float, float, float, float]]:
    texts = sentences()
    finals = [final(i, texts[i % len(texts)]) for i in range(n)]
    rows = []
    for name, config in CONFIGS.items():
        times = []
        cpu0 = time.thread_time_ns()
        for f in finals:
            if name.endswith("(cold)"):
                is_profane.cache_clear()
            t0 = time.perf_counter_ns()
            format_final(f, config)
            times.append((time.perf_counter_ns() - t0) / 1000)
        cpu = (time.thread_time_ns() - cpu0) / 1000 / len(finals)
        times.sort()
        words = statistics.mean(len(f.words or ()) for f in finals)
        p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
        rows.append((name, statistics.mean(times), p50, p99, cpu, words))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finals", type=int, default=2000)
    args = parser.parse_args()
    format_final(final(0, HEARD[0]), CONFIGS["all of them"])  # load text2num and the word list
    rows = run(args.finals)
    print(f"{args.finals} finals, {rows[0][5]:.1f} words each on average")
    print(f"{'config':38} {'mean µs':>9} {'p50 µs':>9} {'p99 µs':>9} {'CPU µs':>9}")
    for name, mean, p50, p99, cpu, _ in rows:
        print(f"{name:38} {mean:9.1f} {p50:9.1f} {p99:9.1f} {cpu:9.1f}")
    print("load:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
