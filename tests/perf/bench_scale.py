#!/usr/bin/env python3
"""Scale: N concurrent WebSocket sessions, VAD only, against the hub and the bare baseline.

    python tests/perf/bench_scale.py [--sizes 100 250 500 1000 2000] [--quick] [--profile 1000]
                                     [--vad-engine silero]

For each server (``hub``: ``asrhub serve`` with provider ``none``; ``bare``:
tests/perf/bare_vad_server.py) and each N, a fresh server process is started, warmed up with a
few sessions, its idle RSS read, then tests/perf/loadgen.py (its own process) runs N sessions
streaming a fixture utterance between room tone at real-time pace in 100 ms PCM16 frames, starts
spread over 2 s. Latency is the client's receive time of ``vad.speech_ended`` minus the send time
of the frame holding (true end of speech + silence_ms): what a client waits beyond the hangover
it asked for. ``proc`` is the same against the frame holding the instant the VAD decided (the
event's ``t``), i.e. pure processing and delivery time. CPU % is of one core (2 cores = 200).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Sampler, Server, Table, percentile, print_tables, run_loadgen

SIZES = (100, 250, 500, 1000, 2000)
QUICK_SIZES = (50, 200)
HANGOVER_MS = 500
CONFIG = {"provider": "none", "vad": {"silence_ms": HANGOVER_MS}}


def one_run(kind: str, n: int, *, stagger: float = 2.0, profile_dir: Path | None = None) -> dict[str, Any]:
    with Server(kind) as server:
        # warm-up: load the lazily imported code paths, so idle RSS is the steady idle
        run_loadgen(
            [
                "--url",
                server.url,
                "--sessions",
                "3",
                "--stagger",
                "0",
                "--pace",
                "fast",
                "--config",
                json.dumps(CONFIG),
            ]
        )
        time.sleep(0.5)
        rss_idle = server.rss()
        profiler = None
        if profile_dir is not None and shutil.which("py-spy"):
            profile_dir.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(server.proc.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "200",
                    "--output",
                    str(profile_dir / f"{kind}-{n}.txt"),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        with Sampler(server.ps) as sampler:
            result = run_loadgen(
                [
                    "--url",
                    server.url,
                    "--sessions",
                    str(n),
                    "--stagger",
                    str(stagger),
                    "--config",
                    json.dumps(CONFIG),
                    "--hangover-ms",
                    str(HANGOVER_MS),
                ]
            )
        if profiler is not None:
            profiler.send_signal(2)
            try:
                profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                profiler.kill()
        # steady state: every session is streaming (after the last start, before the first end)
        t_steady0 = result["t_all_started"]
        t_steady1 = result["t_start"] + result["audio_s"]
        cpu, rss_peak = sampler.window(t_steady0, t_steady1)
        busy = sampler.machine_busy(t_steady0, t_steady1)
        _, rss_peak_all = sampler.window(result["t_start"], result["t_end"])
        alive = server.proc.poll() is None
    clients = result["clients"]
    lat = [c["lat_audio_ms"] for c in clients if "lat_audio_ms" in c and c["error"] is None]
    proc = [c["lat_proc_ms"] for c in clients if "lat_proc_ms" in c and c["error"] is None]
    offsets = [1000 * (c["ended_t"] - result["speech_end_s"]) for c in clients if "ended_t" in c]
    errors = [c["error"] for c in clients if c["error"] is not None]
    missing = sum(1 for c in clients if c["error"] is None and "lat_audio_ms" not in c)
    frames = sum(c["frames"] for c in clients)
    late = sum(c["late"] for c in clients)
    wall = result["t_end"] - result["t_start"]
    return {
        "kind": kind,
        "n": n,
        "ok": len(lat),
        "p50": percentile(lat, 50),
        "p99": percentile(lat, 99),
        "max": max(lat) if lat else float("nan"),
        "proc_p50": percentile(proc, 50),
        "proc_p99": percentile(proc, 99),
        "vad_offset_ms": percentile(offsets, 50),
        "cpu": cpu,
        "rss_idle_mb": rss_idle / 2**20,
        "rss_peak_mb": max(rss_peak, rss_peak_all) / 2**20,
        "kb_per_session": (max(rss_peak, rss_peak_all) - rss_idle) / 1024 / n,
        "frames": frames,
        "late": late,
        "errors": len(errors) + missing,
        "error_sample": errors[:3],
        "spurious": sum(c.get("spurious", 0) for c in clients),
        "client_cpu": 100.0 * result["cpu_s"] / max(wall, 1e-9),
        "machine_busy": busy,
        "others_cpu": busy - cpu - 100.0 * result["cpu_s"] / max(wall, 1e-9),
        "server_alive": alive,
    }


def run(
    sizes: tuple[int, ...] = SIZES,
    kinds: tuple[str, ...] = ("bare", "hub"),
    profile: int | None = None,
    profile_dir: Path | None = None,
    progress: bool = True,
    stagger: float = 2.0,
) -> tuple[list[Table], list[dict[str, Any]]]:
    runs: list[dict[str, Any]] = []
    for n in sizes:
        for kind in kinds:
            pdir = (
                (profile_dir or Path("/tmp/asrhub-bench-profiles"))
                if profile == n and kind == "hub"
                else None
            )
            try:
                r = one_run(kind, n, stagger=stagger, profile_dir=pdir)
            except Exception as exc:  # one failed size must not hide the others' numbers
                r = {"kind": kind, "n": n, "failed": f"{type(exc).__name__}: {exc}"[:300]}
            runs.append(r)
            if progress:
                print(
                    f"  scale {kind} N={n}: "
                    + (
                        r.get("failed")
                        or f"p99 {r['p99']:.1f} ms, {r['kb_per_session']:.1f} KB/session, cpu {r['cpu']:.0f}%"
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    cols = [
        "server",
        "N",
        "ok",
        "p50 ms",
        "p99 ms",
        "max ms",
        "proc p99 ms",
        "hub CPU %",
        "RSS idle MB",
        "RSS peak MB",
        "KB/session",
        "late frames",
        "errors",
        "loadgen CPU %",
        "other procs CPU %",
    ]
    table = Table("Scale: VAD-only sessions at real-time pace (latency beyond the 500 ms hangover)", cols)
    for r in runs:
        if "failed" in r:
            table.rows.append([r["kind"], r["n"], "failed", *["–"] * (len(cols) - 3)])
            table.notes.append(f"{r['kind']} N={r['n']}: {r['failed']}")
            continue
        table.rows.append(
            [
                r["kind"],
                r["n"],
                r["ok"],
                r["p50"],
                r["p99"],
                r["max"],
                r["proc_p99"],
                r["cpu"],
                r["rss_idle_mb"],
                r["rss_peak_mb"],
                r["kb_per_session"],
                f"{r['late']}/{r['frames']}",
                r["errors"],
                r["client_cpu"],
                max(0.0, r["others_cpu"]),
            ]
        )
        if r["error_sample"]:
            table.notes.append(f"{r['kind']} N={r['n']} errors, e.g.: {'; '.join(r['error_sample'])}")
    table.notes.append(
        "latency = receive(vad.speech_ended) − send(frame holding true end + silence_ms); proc = against the "
        "frame holding the VAD's decision instant; late frame = sent > 100 ms after its deadline; "
        "CPU % of one core (2 cores = 200); other procs = machine busy − server − loadgen (load not ours)"
    )
    ratio = Table(
        "Scale: hub / bare baseline (same run)",
        [
            "N",
            "p99 hub ms",
            "p99 bare ms",
            "p99 ratio",
            "KB/session hub",
            "KB/session bare",
            "RSS ratio",
            "CPU hub %",
            "CPU bare %",
        ],
    )
    by = {(r["kind"], r["n"]): r for r in runs if "failed" not in r}
    for n in sizes:
        h, b = by.get(("hub", n)), by.get(("bare", n))
        if h and b:
            ratio.rows.append(
                [
                    n,
                    h["p99"],
                    b["p99"],
                    h["p99"] / b["p99"] if b["p99"] > 0 else float("nan"),
                    h["kb_per_session"],
                    b["kb_per_session"],
                    h["kb_per_session"] / b["kb_per_session"] if b["kb_per_session"] > 0 else float("nan"),
                    h["cpu"],
                    b["cpu"],
                ]
            )
    return [table, ratio] if len(kinds) > 1 else [table], runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+")
    ap.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}")
    ap.add_argument("--only", choices=("hub", "bare"))
    ap.add_argument(
        "--profile", type=int, metavar="N", help="py-spy record the hub during the run with N sessions"
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--vad-engine", choices=("webrtc", "silero"), help="the sessions' vad.engine")
    args = ap.parse_args()
    if args.vad_engine:
        CONFIG["vad"]["engine"] = args.vad_engine  # type: ignore[index]
    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else SIZES))
    kinds = (args.only,) if args.only else ("bare", "hub")
    tables, runs = run(sizes, kinds, profile=args.profile)
    print_tables(tables)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
