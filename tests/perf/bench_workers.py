#!/usr/bin/env python3
"""Speech-heavy scale load against the bare baseline and ``asrhub serve --workers 1`` / ``2``.

    python tests/perf/bench_workers.py                       # N = 1000 and 2000 (~6 min)
    python tests/perf/bench_workers.py --sizes 1000 --duration 20 --json out.json

For each N and each server (``bare``: tests/perf/bare_vad_server.py; ``w1``/``w2``: the hub with
provider ``none`` and 1 or 2 worker processes) a fresh server starts, takes a short warm-up, then
tests/perf/loadgen_speech.py (its own process) runs N sessions: 1 s speech / 1 s room tone at
real-time pace in 100 ms frames, a ping each second. Reported: ping round trip p50/p99 in the
steady window (every session streaming), server CPU (the whole process tree: supervisor and
workers; % of one core, 2 cores = 200), the load generator's CPU, the whole machine's busy CPU
and load average (other people's work on a shared machine shows there), KB/session = (peak tree
RSS − idle tree RSS) / N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PERF, ROOT, free_port, hub_env, percentile

SIZES = (1000, 2000)
KINDS = ("bare", "w1", "w2")


class TreeSampler:
    """CPU seconds and RSS of a process and its children, and the machine's busy CPU, every 0.25 s."""

    def __init__(self, root: psutil.Process) -> None:
        self.root = root
        self.samples: list[tuple[float, float, int, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                cpu = rss = 0.0
                for p in procs:
                    try:
                        t = p.cpu_times()
                        cpu += t.user + t.system
                        rss += p.memory_info().rss
                    except psutil.Error:
                        pass
                m = psutil.cpu_times()
                busy = m.user + m.nice + m.system + m.irq + m.softirq + getattr(m, "steal", 0.0)
                self.samples.append((time.monotonic(), cpu, int(rss), busy))
            except psutil.Error:
                return
            self._stop.wait(0.25)

    def window(self, start: float, end: float) -> tuple[float, int, float]:
        inside = [s for s in self.samples if start <= s[0] <= end] or self.samples[-2:]
        dt = max(inside[-1][0] - inside[0][0], 1e-9)
        cpu = 100.0 * (inside[-1][1] - inside[0][1]) / dt
        busy = 100.0 * (inside[-1][3] - inside[0][3]) / dt
        return cpu, max(s[2] for s in self.samples), busy


def start_server(kind: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    if kind == "bare":
        cmd = [sys.executable, str(PERF / "bare_vad_server.py"), "--port", str(port)]
        env = hub_env()
    else:
        workers = kind[1:]
        cmd = [sys.executable, "-m", "asrhub", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", workers]
        env = hub_env({"ASRHUB_DEFAULT_PROVIDER": "none", "ASRHUB_METRICS__OPERATOR_SAMPLE": "0"})
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + 120
    import socket

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} exited with {proc.returncode}")
        if kind == "bare":
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.startswith("asrhub: listening on"):
                break
    return proc, f"ws://127.0.0.1:{port}/v1/stream"


def loadgen(url: str, n: int, duration: float, stagger: float) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(PERF / "loadgen_speech.py"), "--url", url, "--sessions", str(n)]
    cmd += ["--duration", str(duration), "--stagger", str(stagger)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def one_run(kind: str, n: int, duration: float) -> dict[str, Any]:
    proc, url = start_server(kind)
    try:
        warm = loadgen(url, 5, 1.0, 0.0)
        warm.communicate(timeout=60)
        time.sleep(1.0)
        root = psutil.Process(proc.pid)
        with TreeSampler(root) as sampler:
            time.sleep(0.6)
            idle_rss = sampler.samples[-1][2]
            stagger = max(2.0, n / 400)
            gen = loadgen(url, n, duration, stagger)
            gen_ps = psutil.Process(gen.pid)
            out, err = gen.communicate(timeout=duration + stagger + 120)
            if gen.returncode != 0:
                raise RuntimeError(err.decode()[-1500:])
            result = json.loads(out.decode().strip().splitlines()[-1])
            cpu, peak_rss, busy = sampler.window(result["t_all_started"] + 1.0, result["t_stop"])
        del gen_ps
        wall = result["t_end"] - result["t_start"]
        rtts = result["rtts"]
        return {
            "kind": kind,
            "n": n,
            "p50": percentile(rtts, 50),
            "p99": percentile(rtts, 99),
            "pings": len(rtts),
            "lost_pongs": result["lost_pongs"],
            "errors": result["error_count"],
            "error_sample": result["errors"],
            "late": result["late"],
            "speech_events": result["speech_events"],
            "frames": result["frames"],
            "server_cpu": cpu,
            "loadgen_cpu": 100.0 * result["cpu_s"] / max(wall, 1e-9),
            "machine_busy": busy,
            "kb_per_session": (peak_rss - idle_rss) / 1024 / n,
            "load_avg": os.getloadavg()[0],
        }
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    runs = []
    for n in args.sizes:
        for kind in args.kinds:
            try:
                r = one_run(kind, n, args.duration)
            except Exception as exc:  # one failure must not hide the other numbers
                r = {"kind": kind, "n": n, "failed": f"{type(exc).__name__}: {exc}"[:400]}
            runs.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    print(
        "| server | N | ping p50 ms | ping p99 ms | server CPU % | loadgen CPU % | machine busy % "
        "| load avg | KB/session | late frames | errors |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        if "failed" in r:
            print(f"| {r['kind']} | {r['n']} | failed: {r['failed']} |")
            continue
        print(
            f"| {r['kind']} | {r['n']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['server_cpu']:.0f} | "
            f"{r['loadgen_cpu']:.0f} | {r['machine_busy']:.0f} | {r['load_avg']:.1f} | "
            f"{r['kb_per_session']:.1f} | {r['late']}/{r['frames']} | {r['errors']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
