#!/usr/bin/env python3
"""Memory against the nearest peer: ASR Hub and wyoming-faster-whisper, side by side, on the same
model (the bundled tiny.en, int8, beam 5), the same clips, the same protocol (Wyoming).

    python tests/perf/bench_peer_memory.py [--clips 20] [--settle 5] [--markdown]
                                           [--no-peer] [--no-breakdown] [--allocator]

* **Side by side.** The peer — ``wyoming-faster-whisper`` from PyPI (``PEER_SPEC``), in a venv of
  its own (``.venv-wyoming``, made here with ``uv`` on first use: its dependencies stay out of
  uv.lock, as ``.venv-compat``'s do) — and ``asrhub serve --wyoming-port`` (defaults otherwise:
  whisper tiny.en, partials, word timestamps) each in its own process. This process is the
  Wyoming client (``wyoming.client.AsyncTcpClient``): for each clip (the English fixtures in
  turn) it sends ``transcribe``, ``audio-start``, the PCM in 100 ms chunks, ``audio-stop`` to
  one server, waits for its ``transcript``, then does the same with the other (who goes first
  alternates). RSS (``psutil``, sampled every 0.2 s) at idle, right after the last transcript,
  after ``--settle`` seconds more, and the peak; the transcripts' WER says both did the work.
  ``--no-peer`` (or a peer that cannot be installed) measures the hub alone, against the issue's
  209 MiB.
* **Breakdown** (a fresh interpreter doing what ``asrhub serve`` does, step by step): RSS after
  each group of imports, after the engine loads, and what the hub now loads only on demand
  (wake-word models, ``scipy.signal``).
* ``--allocator``: the engine alone in fresh interpreters (tiny.en, the clips decoded as finals
  and partials): RSS after the run, after ``malloc_trim(0)``, and CPU seconds, with glibc's
  defaults, ``MALLOC_ARENA_MAX=2``, and a fixed mmap threshold.

Prints the machine, its load average before and after, and the tables (``--markdown``: for
docs/benchmarks.md). Nothing is asserted: tests/perf/test_bench_smoke.py only runs it small.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    SPEECH_FIXTURES,
    ListeningProcess,
    Sampler,
    Server,
    Table,
    free_port,
    machine,
    markdown,
    print_tables,
    wait_port,
)

from tests.audio_utils import fixture, fixture_entry, load_wav, pcm16_bytes, wer

PEER_SPEC = "wyoming-faster-whisper==3.8.1"
PEER_VENV = ROOT / ".venv-wyoming"
PEER_BIN = PEER_VENV / "bin" / "wyoming-faster-whisper"
ISSUE_PEER_MIB = 209.0
"""wyoming-faster-whisper's RSS after the side-by-side run reported in issue 29."""
MIB = 1 << 20
CHUNK = 3200  # 100 ms of 16 kHz PCM16


def mib(n: float) -> float:
    return n / MIB


# ------------------------------------------------------------------------------ the peer


def install_peer() -> str | None:
    """Make ``.venv-wyoming`` with the peer in it (once); None when ready, else why not."""
    if PEER_BIN.exists():
        return None
    uv = shutil.which("uv")
    if uv is None:
        return "uv is not installed (scripts/setup.sh installs it)"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    steps = [
        [uv, "venv", "--quiet", "--allow-existing", "--python", sys.executable, str(PEER_VENV)],
        [uv, "pip", "install", "--quiet", "--python", str(PEER_VENV / "bin" / "python"), PEER_SPEC],
    ]
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            return f"{' '.join(step[:3])} failed: {done.stderr.strip()[-500:]}"
    return None if PEER_BIN.exists() else f"{PEER_SPEC} installed no {PEER_BIN.name} script"


class Peer(ListeningProcess):
    """wyoming-faster-whisper on 127.0.0.1, the bundled tiny.en, settings as the hub's."""

    stop_signal = signal.SIGTERM

    def __init__(self, model_dir: str) -> None:
        self.port = free_port()
        self.data = tempfile.mkdtemp(prefix="asrhub-peer-")
        self.log_path = Path(self.data) / "peer.log"
        cmd = [
            str(PEER_BIN),
            *("--uri", f"tcp://127.0.0.1:{self.port}", "--model", model_dir, "--data-dir", self.data),
            *("--local-files-only", "--beam-size", "5", "--compute-type", "int8", "--language", "en"),
        ]
        self._start(cmd, {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.data, ignore_errors=True)


# ------------------------------------------------------------------------------ the run


async def transcribe(port: int, pcm: bytes) -> str:
    """One clip over Wyoming, as Home Assistant sends it; the transcript's text."""
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        for i in range(0, len(pcm), CHUNK):
            await client.write_event(
                AudioChunk(rate=16_000, width=2, channels=1, audio=pcm[i : i + CHUNK]).event()
            )
        await client.write_event(AudioStop().event())
        while (event := await client.read_event()) is not None:
            if Transcript.is_type(event.type):
                return Transcript.from_event(event).text
    return ""


def clip_list(n: int) -> list[tuple[str, bytes]]:
    return [(name, pcm16_bytes(load_wav(fixture(name))[0])) for name in (SPEECH_FIXTURES * n)[:n]]


def side_by_side(clips: int, settle_s: float, with_peer: bool) -> tuple[Table, dict[str, Any]]:
    from asrhub.providers.whisper_model import default_model_dir

    model = str(default_model_dir())
    why_not = install_peer() if with_peer else "--no-peer"
    wyoming = free_port()
    contenders: dict[str, Any] = {}
    result: dict[str, Any] = {"peer": None if why_not is None else why_not, "load": [os.getloadavg()[0]]}
    with Server("hub", provider="whisper", env={"ASRHUB_SERVER__WYOMING_PORT": str(wyoming)}) as hub:
        wait_port(wyoming, hub.proc)
        contenders["asrhub"] = (hub.ps, wyoming)
        peer = Peer(model).__enter__() if why_not is None else None
        try:
            if peer is not None:
                contenders["wyoming-faster-whisper"] = (peer.ps, peer.port)
            result["rows"] = _measure(contenders, clip_list(clips), settle_s)
        finally:
            if peer is not None:
                peer.stop()
    result["load"].append(os.getloadavg()[0])
    table = Table(
        f"Memory against the nearest peer: {clips} clips over Wyoming, one at a time (RSS MiB)",
        [
            "server",
            "idle",
            "peak",
            "after the run",
            f"after {settle_s:g} s more",
            "vs peer after",
            "mean WER",
        ],
    )
    rows = result["rows"]
    peer_after = (
        rows["wyoming-faster-whisper"]["settled"] if "wyoming-faster-whisper" in rows else ISSUE_PEER_MIB
    )
    for name, r in rows.items():
        ratio = r["settled"] / peer_after
        table.rows.append([name, r["idle"], r["peak"], r["after"], r["settled"], f"{ratio:.2f}×", r["wer"]])
    if why_not is not None:
        table.notes.append(f"peer not run ({why_not}): ratio against the issue's {ISSUE_PEER_MIB:g} MiB")
    table.notes.append(
        f"load average (1 min) {result['load'][0]:.1f} before, {result['load'][1]:.1f} after; "
        f"same model dir, int8, beam 5, language en; the hub at its defaults (partials, word times)"
    )
    return table, result


def _measure(contenders: dict[str, Any], clips: list[tuple[str, bytes]], settle_s: float) -> dict[str, Any]:
    samplers = {name: Sampler(ps) for name, (ps, _port) in contenders.items()}
    for s in samplers.values():
        s.__enter__()
    try:
        time.sleep(1.0)
        idle = {name: mib(ps.memory_info().rss) for name, (ps, _port) in contenders.items()}
        errors: dict[str, list[float]] = {name: [] for name in contenders}
        order = list(contenders)

        async def run() -> None:
            for i, (name, pcm) in enumerate(clips):
                for who in order[i % 2 :] + order[: i % 2]:  # who goes first alternates
                    text = await transcribe(contenders[who][1], pcm)
                    errors[who].append(wer(fixture_entry(name)["text"], text))

        asyncio.run(run())
        after = {name: mib(ps.memory_info().rss) for name, (ps, _port) in contenders.items()}
        time.sleep(settle_s)
        settled = {name: mib(ps.memory_info().rss) for name, (ps, _port) in contenders.items()}
    finally:
        for s in samplers.values():
            s.__exit__(None, None, None)
    return {
        name: {
            "idle": idle[name],
            "peak": mib(samplers[name].peak_rss()),
            "after": after[name],
            "settled": settled[name],
            "wer": sum(errors[name]) / len(errors[name]),
        }
        for name in contenders
    }


# ------------------------------------------------------------------------------ breakdown

BREAKDOWN = r"""
import asyncio, json, os, sys

def rss():
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

def tops():
    return {m.split(".")[0] for m in sys.modules if not m.startswith("_")}

steps, seen = [], tops()

def step(label):
    global seen
    new = sorted(tops() - seen - {"asrhub"})
    seen = tops()
    steps.append([label, rss(), new])

step("interpreter")
import asrhub.cli, asrhub.commands.serve, asrhub.settings.loader
step("asrhub serve: the CLI and settings")
import asrhub.commands.server
step("the server module (aiohttp, structlog)")
import socketio
step("python-socketio (with engine.io, and the clients it imports)")
import asrhub.transports.app
step("the other transports")
import asrhub.wiring
step("the session chain (decode, VAD, segment)")

async def main():
    from asrhub.settings.schema import Settings
    hub = asrhub.wiring.build_hub(Settings())
    step("the whisper provider (faster-whisper, CTranslate2, ONNX Runtime)")
    await hub.start()
    step("tiny.en loaded: the idle hub")
    from asrhub.operators.wakeword_models import WakewordModels, available
    WakewordModels().load(tuple(available()))
    step("on demand: every installed wake word (first wake-word session)")
    from asrhub.operators.resample import load_filters
    load_filters()
    step("on demand: scipy.signal (first PCM stream not at 16 kHz)")
    await hub.shutdown(0.0)

asyncio.run(main())
print(json.dumps(steps))
"""


def breakdown() -> Table:
    env = {**os.environ, "ASRHUB_LOG_LEVEL": "warning"}
    done = subprocess.run(
        [sys.executable, "-c", BREAKDOWN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"breakdown failed: {done.stderr[-2000:]}")
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    table = Table(
        "Where the hub's memory goes: asrhub serve's start-up step by step (RSS MiB)",
        ["step", "RSS", "+", "packages imported"],
    )
    last = 0.0
    for label, rss, new in steps:
        shown = ", ".join(new[:8]) + (f" (+{len(new) - 8})" if len(new) > 8 else "")
        table.rows.append([label, rss, rss - last, shown or "-"])
        last = rss
    table.notes.append("on-demand rows: what the first session that needs it adds (not loaded at start)")
    return table


# ------------------------------------------------------------------------------ allocator

ENGINE = r"""
import asyncio, ctypes, json, os, sys, time
sys.path.insert(0, os.getcwd())
from tests.audio_utils import fixture, load_wav
from asrhub.providers.whisper import WhisperProvider

def rss():
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

async def main():
    provider = WhisperProvider({})
    await provider.start()
    provider.engine().pool.trim = None  # measure what glibc keeps, then trim by hand
    loaded = rss()
    clips = [load_wav(fixture(name))[0] for name in json.loads(sys.argv[1])]
    cpu = time.process_time()
    for clip in clips:
        await provider.transcribe(clip, language="en")
        task = provider.try_partial(clip[: len(clip) // 2], language="en")
        if task is not None:
            await task
    cpu = time.process_time() - cpu
    after = rss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(json.dumps({"loaded": loaded, "after": after, "trimmed": rss(), "cpu": cpu}))
    await provider.close()

asyncio.run(main())
"""

ALLOCATORS = {
    "glibc defaults": {},
    "MALLOC_ARENA_MAX=2": {"MALLOC_ARENA_MAX": "2"},
    "MALLOC_MMAP_THRESHOLD_=131072 (fixed)": {"MALLOC_MMAP_THRESHOLD_": "131072"},
}


def allocator(clips: int) -> Table:
    names = json.dumps([name for name, _pcm in clip_list(clips)])
    table = Table(
        f"The engine alone: {clips} clips decoded as finals and partials (RSS MiB, CPU s)",
        ["allocator", "model loaded", "after the run", "after malloc_trim(0)", "decode CPU s"],
    )
    for label, extra in ALLOCATORS.items():
        env = {**os.environ, "ASRHUB_LOG_LEVEL": "warning", **extra}
        done = subprocess.run(
            [sys.executable, "-c", ENGINE, names],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{label}: {done.stderr[-2000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        table.rows.append([label, r["loaded"], r["after"], r["trimmed"], r["cpu"]])
    table.notes.append(
        "the hub trims by itself once its engine has been idle for 2 s (asrhub/engine/heap.py); "
        "a fixed mmap threshold returns the buffers at every free, at the CPU cost shown"
    )
    return table


# ------------------------------------------------------------------------------ main


def run(
    clips: int = 20, settle_s: float = 5.0, *, peer: bool = True, parts: bool = True, alloc: bool = False
) -> tuple[list[Table], dict[str, Any]]:
    tables: list[Table] = []
    result: dict[str, Any] = {}
    if parts:
        tables.append(breakdown())
    side, result = side_by_side(clips, settle_s, peer)
    tables.append(side)
    if alloc:
        tables.append(allocator(clips))
    return tables, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the run before the last RSS")
    parser.add_argument("--no-peer", action="store_true", help="the hub alone (against the issue's 209 MiB)")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument(
        "--allocator", action="store_true", help="also the engine alone under three allocators"
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    print(json.dumps({**machine(), "load average": os.getloadavg()}))
    tables, _ = run(
        args.clips, args.settle, peer=not args.no_peer, parts=not args.no_breakdown, alloc=args.allocator
    )
    print(markdown(tables) if args.markdown else "", end="")
    if not args.markdown:
        print_tables(tables)


if __name__ == "__main__":
    main()
