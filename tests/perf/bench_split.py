#!/usr/bin/env python3
"""Where the segmenter cuts audio it must split: exactly at the limit, or at the quietest 20 ms
of the last few seconds. Word error rate of whisper tiny.en on the English fixtures with the
VAD off (so every cut is a forced one), for each window length and each way of cutting.

    uv run --frozen python tests/perf/bench_split.py [--windows 10 5] [--search 0 3]

``--search 0`` is the exact cut; the hub uses ``asrhub.wiring.SPLIT_SEARCH_S``.
Not a pytest module: numbers to read, not thresholds to pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import asrhub.wiring as wiring  # noqa: E402
from asrhub.frames import FinalTranscript  # noqa: E402
from asrhub.providers.whisper import WhisperProvider  # noqa: E402
from tests.audio_utils import fixture, load_wav, wer  # noqa: E402
from tests.providers.conftest import make_hub, run_session  # noqa: E402


async def main(windows: list[float], searches: list[float]) -> None:
    manifest = json.loads((ROOT / "tests" / "fixtures" / "manifest.json").read_text())
    english = [e for e in manifest["files"] if e.get("language") == "en" and e.get("text")]
    whisper = WhisperProvider()
    await whisper.start()
    print("| window | cut | files | WER |\n|---|---|---|---|")
    try:
        for window in windows:
            for search in searches:
                wiring.SPLIT_SEARCH_S = search
                refs, hyps = [], []
                for entry in english:
                    samples, _ = load_wav(fixture(entry["file"]))
                    if len(samples) / 16_000 < window:
                        continue  # never split: the same either way
                    hub = make_hub({"whisper": whisper}, fixed_window_s=window)
                    config = {"vad": {"enabled": False}, "partials": False}
                    events = await run_session(hub, samples, config, chunk_s=0.5)
                    refs.append(entry["text"])
                    hyps.append(" ".join(e.text for e in events if isinstance(e, FinalTranscript)))
                how = f"quietest 20 ms of the last {search:g} s" if search else "exactly at the limit"
                score = wer(" ".join(refs), " ".join(hyps)) * 100
                print(f"| {window:g} s | {how} | {len(refs)} | {score:.2f} % |")
    finally:
        await whisper.close()


if __name__ == "__main__":
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--windows", type=float, nargs="+", default=[10.0, 5.0])
    parser.add_argument("--search", type=float, nargs="+", default=[0.0, wiring.SPLIT_SEARCH_S])
    args = parser.parse_args()
    asyncio.run(main(args.windows, args.search))
