#!/usr/bin/env python3
"""Cost of the ``wakeword`` operator: ms per 80 ms frame, and memory per session.

    uv run --frozen python tests/perf/bench_wakeword.py [--seconds 60] [--sessions 200]

Prints, for one and for three wake words and several client chunk sizes, the CPU time per 80 ms
step (median and p99 over the steps of a speech clip looped to ``--seconds``) and what that
means in real-time streams per core; the model load time; and the memory a session adds
(tracemalloc of the per-session state, and RSS growth over ``--sessions`` live sessions),
next to what one ``openwakeword.Model`` per session would cost instead.
Not a pytest module: numbers to read, not thresholds to pass.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from asrhub.frames import AudioChunk  # noqa: E402
from asrhub.operators.wakeword import Detector  # noqa: E402
from asrhub.operators.wakeword_models import FRAME, WakewordModels, model_dir  # noqa: E402

MODELS = WakewordModels()
from tests.audio_utils import load_wav  # noqa: E402

RATE = 16_000


def speech(seconds: float) -> np.ndarray:
    clip, _ = load_wav(ROOT / "tests" / "fixtures" / "hey_jarvis_weather.wav")
    return np.tile(clip, int(np.ceil(seconds * RATE / len(clip))))[: int(seconds * RATE)]


def per_step_ms(names: list[str], samples: np.ndarray, chunk: int) -> tuple[float, float, float, float]:
    """(median wall ms per step, p99, mean wall ms and mean CPU ms per 80 ms of audio).

    CPU time is this thread's (onnxruntime runs single-threaded on the caller's thread), so it
    stays meaningful on a loaded machine where wall time does not."""
    detector = Detector(MODELS.features(), MODELS.wake(names), 0.5, 1.5)
    costs: list[float] = []
    total = 0.0
    cpu0 = time.thread_time()
    for i, pos in enumerate(range(0, len(samples), chunk)):
        c = AudioChunk(samples[pos : pos + chunk], RATE, pos / RATE, i)
        before = detector.steps
        t0 = time.perf_counter()
        detector.feed(c)
        dt = time.perf_counter() - t0
        total += dt
        if detector.steps > before:
            costs.extend([dt / (detector.steps - before)] * (detector.steps - before))
    steps = len(samples) // FRAME
    cpu = (time.thread_time() - cpu0) / steps * 1e3
    return statistics.median(costs) * 1e3, float(np.percentile(costs, 99)) * 1e3, total / steps * 1e3, cpu


def memory(sessions: int, names: list[str], samples: np.ndarray) -> None:
    front, models = MODELS.features(), MODELS.wake(names)
    warm = samples[: 2 * RATE]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    keep = []
    for i in range(50):
        d = Detector(front, models, 0.5, 1.5)
        d.feed(AudioChunk(warm[: 2 * RATE - 100], RATE, 0.0, i))  # leaves a partial step pending
        keep.append(d)
    traced = (tracemalloc.get_traced_memory()[0] - base) / len(keep)
    tracemalloc.stop()
    del keep
    gc.collect()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    live = []
    for i in range(sessions):
        d = Detector(front, models, 0.5, 1.5)
        d.feed(AudioChunk(warm, RATE, 0.0, i))
        live.append(d)
    rss = (proc.memory_info().rss - rss0) / sessions
    print(
        f"memory per session ({'+'.join(names)}): {traced / 1024:.1f} KiB traced state, "
        f"{rss / 1024:.1f} KiB RSS growth over {sessions} live sessions"
    )

    from openwakeword.model import Model

    d = model_dir()
    gc.collect()
    rss0 = proc.memory_info().rss
    owned = [
        Model(
            wakeword_models=[str(d / f"{n}_v0.1.onnx") for n in names],
            inference_framework="onnx",
            melspec_model_path=str(d / "melspectrogram.onnx"),
            embedding_model_path=str(d / "embedding_model.onnx"),
        )
        for _ in range(10)
    ]
    print(
        f"  for comparison, one openwakeword.Model per session: "
        f"{(proc.memory_info().rss - rss0) / len(owned) / 1024:.0f} KiB RSS each"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--sessions", type=int, default=200)
    args = ap.parse_args()
    import onnxruntime

    load = ", ".join(f"{x:.1f}" for x in psutil.getloadavg())
    print(f"onnxruntime {onnxruntime.__version__}, {psutil.cpu_count()} CPUs (load {load})")
    print(f"models in {model_dir()}")
    t0 = time.perf_counter()
    MODELS.features()
    MODELS.wake(["hey_jarvis", "alexa", "hey_mycroft"])
    print(
        f"load (feature models + 3 wake words, once per process): {(time.perf_counter() - t0) * 1e3:.0f} ms"
    )
    samples = speech(args.seconds)
    per_step_ms(["hey_jarvis"], samples[: 5 * RATE], 320)  # warm up
    for names in (["hey_jarvis"], ["hey_jarvis", "alexa", "hey_mycroft"]):
        for chunk in (320, 1280, 16_000):
            med, p99, mean, cpu = per_step_ms(names, samples, chunk)
            print(
                f"{'+'.join(names):28s} chunks of {chunk / 16:5.0f} ms: wall {med:.2f} ms/step median, "
                f"{p99:.2f} p99, {mean:.2f} mean; CPU {cpu:.2f} ms per 80 ms step "
                f"-> {80 / cpu:.0f} real-time streams per core"
            )
    memory(args.sessions, ["hey_jarvis"], samples)


if __name__ == "__main__":
    main()
