#!/usr/bin/env python3
"""Speech-heavy scale load against the bare baseline and ``asrhub serve --workers 1`` / ``2``.

    python tests/perf/bench_workers.py                       # N = 1000 and 2000 (~6 min)
    python tests/perf/bench_workers.py --sizes 1000 --duration 20 --json out.json
    python tests/perf/bench_workers.py --kinds w1 w2 --loops uvloop asyncio --repeat 2 \
        --sizes 1000 2000 3000                               # the event loops side by side (~18 min)

For each N and each server (``bare``: tests/perf/bare_vad_server.py; ``w1``/``w2``: the hub with
provider ``none`` and 1 or 2 worker processes) a fresh server starts, takes a short warm-up, then
tests/perf/loadgen_speech.py (its own process) runs N sessions: 1 s speech / 1 s room tone at
real-time pace in 100 ms frames, a ping each second. Reported: ping round trip p50/p99 in the
steady window (every session streaming), server CPU (the whole process tree: supervisor and
workers; % of one core, 2 cores = 200), the load generator's CPU, the whole machine's busy CPU
and load average (other people's work on a shared machine shows there), KB/session = (peak tree
RSS − idle tree RSS) / N. CPU µs/frame: the server tree's CPU time from the load generator's
start to its end (every session's open and close, every frame, however late) over the frames
sent — the cost of the work, which foreign load delays far more than it changes.

``--loops uvloop asyncio`` runs the hub on each event loop (``server.loop``) in turn: at each N,
``--repeat`` rounds of every kind on A then B (A, B, A, B), so both loops see the same foreign
load on a shared machine; each row carries its start time and the load average (1/5/15 min)
just before it ran. The bare server runs on its default loop, once a round.
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


def start_server(kind: str, loop: str | None = None) -> tuple[subprocess.Popen[str], str]:
    """``loop``: the hub's ``server.loop`` (None: its default)."""
    port = free_port()
    if kind == "bare":
        cmd = [sys.executable, str(PERF / "bare_vad_server.py"), "--port", str(port)]
        env = hub_env()
    else:
        workers = kind[1:]
        cmd = [sys.executable, "-m", "asrhub", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", workers]
        extra = {"ASRHUB_DEFAULT_PROVIDER": "none", "ASRHUB_METRICS__OPERATOR_SAMPLE": "0"}
        if loop is not None:
            extra["ASRHUB_SERVER__LOOP"] = loop
        env = hub_env(extra)
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


def tree_cpu_s(root: psutil.Process) -> float:
    """CPU seconds (user + system) of a process and its children so far."""
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def one_run(kind: str, n: int, duration: float, loop: str | None = None) -> dict[str, Any]:
    started_at, load_before = time.strftime("%H:%M:%S"), os.getloadavg()
    proc, url = start_server(kind, loop)
    try:
        warm = loadgen(url, 5, 1.0, 0.0)
        warm.communicate(timeout=60)
        time.sleep(1.0)
        root = psutil.Process(proc.pid)
        with Sampler(root, 0.25, tree=True) as sampler:  # supervisor + workers
            time.sleep(0.6)
            idle_rss = sampler.samples[-1][2]
            stagger = max(2.0, n / 400)
            cpu_before = tree_cpu_s(root)
            gen = loadgen(url, n, duration, stagger)
            gen_ps = psutil.Process(gen.pid)
            out, err = gen.communicate(timeout=duration + stagger + 120)
            cpu_spent = tree_cpu_s(root) - cpu_before  # every frame and session, however late
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
            "loop": loop or "default",
            "n": n,
            "started_at": started_at,
            "load_before": load_before,
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
            "us_per_frame": 1e6 * cpu_spent / max(result["frames"], 1),
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
    ap.add_argument(
        "--loops",
        nargs="+",
        choices=("asyncio", "uvloop", "auto"),
        help="the hub's server.loop, each in turn (default: the hub's default only)",
    )
    ap.add_argument("--repeat", type=int, default=1, help="rounds at each size (A, B, A, B, …)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    loops: list[str | None] = list(args.loops or [None])
    runs = []
    for n in args.sizes:
        for _round in range(args.repeat):
            for kind in args.kinds:
                for loop in loops if kind != "bare" else [None]:
                    try:
                        r = one_run(kind, n, args.duration, loop)
                    except Exception as exc:  # one failure must not hide the other numbers
                        r = {
                            "kind": kind,
                            "loop": loop,
                            "n": n,
                            "failed": f"{type(exc).__name__}: {exc}"[:400],
                        }
                    runs.append(r)
                    print(json.dumps(r), file=sys.stderr, flush=True)
    columns = ["time", "server", "loop", "N", "ping p50 ms", "ping p99 ms", "server CPU %", "CPU µs/frame"]
    columns += ["loadgen CPU %"]
    columns += ["machine busy %", "load before (1/5/15 min)", "load after", "KB/session", "late frames"]
    columns += ["failed sessions"]
    rows: list[list[Any]] = []
    for r in runs:
        if "failed" in r:
            rows.append(["", r["kind"], r["loop"], r["n"], f"failed: {r['failed']}"])
            continue
        rows.append(
            [
                r["started_at"],
                r["kind"],
                r["loop"],
                r["n"],
                f"{r['p50']:.1f}",
                f"{r['p99']:.1f}",
                f"{r['server_cpu']:.0f}",
                f"{r['us_per_frame']:.0f}",
                f"{r['loadgen_cpu']:.0f}",
                f"{r['machine_busy']:.0f}",
                " / ".join(f"{x:.1f}" for x in r["load_before"]),
                f"{r['load_avg']:.1f}",
                f"{r['kb_per_session']:.1f}",
                f"{r['late']}/{r['frames']}",
                r["errors"],
            ]
        )
    report(columns, rows, runs, args.json)
    if len(loops) > 1:
        print()
        side_by_side(runs, [str(loop) for loop in loops])


def side_by_side(runs: list[dict[str, Any]], loops: list[str]) -> None:
    """Each (N, server) on one row: every round's p99 and server CPU per loop, in run order."""
    columns = ["N", "server"]
    columns += [f"p99 ms {loop}" for loop in loops] + [f"CPU % {loop}" for loop in loops]
    columns += [f"CPU µs/frame {loop}" for loop in loops]
    columns += [f"failed sessions {loop}" for loop in loops]
    rows: list[list[Any]] = []
    for n in dict.fromkeys(r["n"] for r in runs):
        for kind in dict.fromkeys(r["kind"] for r in runs if r["kind"] != "bare"):
            mine = [r for r in runs if r["n"] == n and r["kind"] == kind and "failed" not in r]

            def cells(key: str, spec: str, mine: list[dict[str, Any]] = mine) -> list[str]:
                return [
                    " / ".join(format(r[key], spec) for r in mine if r["loop"] == loop) or "-"
                    for loop in loops
                ]

            rows.append(
                [
                    n,
                    kind,
                    *cells("p99", ".1f"),
                    *cells("server_cpu", ".0f"),
                    *cells("us_per_frame", ".0f"),
                    *cells("errors", "d"),
                ]
            )
    report(columns, rows, None)


if __name__ == "__main__":
    main()
