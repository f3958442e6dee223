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
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PERF, ROOT, Sampler, free_port, hub_env, percentile, report

SIZES = (1000, 2000)
KINDS = ("bare", "w1", "w2")


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
        with Sampler(root, 0.25, tree=True) as sampler:  # supervisor + workers
            time.sleep(0.6)
            idle_rss = sampler.samples[-1][2]
            stagger = max(2.0, n / 400)
            gen = loadgen(url, n, duration, stagger)
            gen_ps = psutil.Process(gen.pid)
            out, err = gen.communicate(timeout=duration + stagger + 120)
            if gen.returncode != 0:
                raise RuntimeError(err.decode()[-1500:])
            result = json.loads(out.decode().strip().splitlines()[-1])
            steady = (result["t_all_started"] + 1.0, result["t_stop"])
            cpu, _ = sampler.window(*steady)
            busy, peak_rss = sampler.machine_busy(*steady), sampler.peak_rss()
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
    columns = ["server", "N", "ping p50 ms", "ping p99 ms", "server CPU %", "loadgen CPU %"]
    columns += ["machine busy %", "load avg", "KB/session", "late frames", "errors"]
    rows: list[list[Any]] = []
    for r in runs:
        if "failed" in r:
            rows.append([r["kind"], r["n"], f"failed: {r['failed']}"])
            continue
        rows.append(
            [
                r["kind"],
                r["n"],
                f"{r['p50']:.1f}",
                f"{r['p99']:.1f}",
                f"{r['server_cpu']:.0f}",
                f"{r['loadgen_cpu']:.0f}",
                f"{r['machine_busy']:.0f}",
                f"{r['load_avg']:.1f}",
                f"{r['kb_per_session']:.1f}",
                f"{r['late']}/{r['frames']}",
                r["errors"],
            ]
        )
    report(columns, rows, runs, args.json)


if __name__ == "__main__":
    main()
