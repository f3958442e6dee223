#!/usr/bin/env python3
"""What each Whisper model costs on this machine: load time, RSS, real-time factor.

    python tests/perf/bench_models.py [--models tiny.en base] [--json out.json]

Each model is measured in a fresh Python process (so RSS is that model's alone): the
``whisper`` provider is started with it as its default model, then every speech fixture of its
languages (English piper utterances and the 40 s file; for ``base`` also German, Spanish and
French espeak-ng speech and the real Mandarin recording fasr ships) is transcribed once to warm
up and then timed, the way a session's final is decoded (beam 5, int8, word timestamps). RTF =
decode seconds / audio seconds (lower is faster; 1.0 is real time). RSS is psutil's, before
loading, after loading, and the peak after decoding. The load average is printed with every
row: on this shared 2-core machine other jobs slow the decodes down.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, report

MB = 2**20


def measure(model: str) -> dict[str, Any]:
    """Runs in the child process."""
    import psutil

    sys.path.insert(0, str(ROOT))
    from asrhub.providers.whisper import WhisperProvider
    from tests.audio_utils import fixture, load_wav, manifest

    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    provider = WhisperProvider({"model": model})
    kinds = {"utterance", "long"} if model.endswith(".en") else {"utterance", "long", "multilingual"}
    audio: list[tuple[str, Any, str | None]] = []
    for entry in manifest()["files"]:
        if entry["kind"] in kinds and (entry["language"] == "en" or not model.endswith(".en")):
            samples, _ = load_wav(fixture(entry["file"]))
            audio.append((entry["file"], samples, entry["language"]))
    if not model.endswith(".en"):
        spec = importlib.util.find_spec("fasr")
        assert spec is not None and spec.origin is not None
        samples, _ = load_wav(Path(spec.origin).parent / "asset" / "example" / "asr_example.wav")
        audio.append(("fasr asr_example.wav", samples, "zh"))

    async def run() -> dict[str, Any]:
        t = time.perf_counter()
        await provider.start()
        load_s = time.perf_counter() - t
        rss_loaded = proc.memory_info().rss
        await provider.transcribe(audio[0][1], language=audio[0][2])  # warm-up
        decode_s = seconds = 0.0
        for _name, samples, language in audio:
            t = time.perf_counter()
            await provider.transcribe(samples, language=language)
            decode_s += time.perf_counter() - t
            seconds += len(samples) / 16_000
        await provider.close()
        return {
            "model": model,
            "files": len(audio),
            "audio_s": round(seconds, 1),
            "load_s": round(load_s, 2),
            "rtf": round(decode_s / seconds, 3),
            "rss_before_mb": round(rss0 / MB),
            "rss_loaded_mb": round(rss_loaded / MB),
            "rss_peak_mb": round(proc.memory_info().rss / MB),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
        }

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    rows = []
    for model in args.models:
        before = [round(x, 2) for x in os.getloadavg()]
        out = subprocess.run(
            [sys.executable, __file__, "--child", model], capture_output=True, text=True, check=True, cwd=ROOT
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["loadavg_before"] = before
        rows.append(row)
    columns = ["model", "files (s of audio)", "load s", "RTF", "RSS before → loaded → peak (MB)", "load avg"]
    cells = [
        [
            r["model"],
            f"{r['files']} ({r['audio_s']} s)",
            str(r["load_s"]),
            str(r["rtf"]),
            f"{r['rss_before_mb']} → {r['rss_loaded_mb']} → {r['rss_peak_mb']}",
            f"{r['loadavg_before'][0]} → {r['loadavg'][0]}",
        ]
        for r in rows
    ]
    report(columns, cells, rows, args.json)


if __name__ == "__main__":
    main()
