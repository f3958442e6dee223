#!/usr/bin/env python3
"""Memory: idle hub, per idle session, per streaming session, and after 10,000 open/close cycles.

    python tests/perf/bench_memory.py [--sessions 1000] [--cycles 10000] [--quick]

Every number is the RSS of a hub process (``asrhub serve``, provider ``none`` unless said) read
with psutil; clients run in tests/perf/loadgen.py, a process of their own. Per-session figures
are (peak RSS while N sessions are open − idle RSS) / N. The cycle rows compare RSS after a
warm-up of 200 cycles with RSS after the whole run: over WebSocket (open → session.started →
session.end → session.closed, 50 at a time), and in process (``Hub.open`` → feed 300 ms of audio
→ ``end`` → closed, in a fresh Python process, with the hub's own count of live sessions and the
number of Session objects the garbage collector can still find).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Sampler, Server, Table, print_tables, run_loadgen, stream_audio

MB = 2**20


def inproc_cycles(cycles: int, warmup: int = 200) -> dict[str, Any]:
    """Runs in a child process: open/feed/end/close ``cycles`` sessions through one Hub."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from asrhub.session.session import Session
    from asrhub.settings.schema import Settings
    from asrhub.wiring import build_hub

    pcm = stream_audio(lead_s=0.3, tail_s=0.0).pcm[: 3 * 3200]
    proc = psutil.Process()

    async def main() -> dict[str, Any]:
        hub = build_hub(Settings(default_provider="none"))
        await hub.start()

        async def one() -> None:
            session = hub.open({"provider": "none"})
            for i in range(0, len(pcm), 3200):
                await session.feed(pcm[i : i + 3200])
            await session.end()

        for _ in range(warmup):
            await one()
        gc.collect()
        rss0 = proc.memory_info().rss
        t = time.perf_counter()
        for _ in range(cycles):
            await one()
        wall = time.perf_counter() - t
        gc.collect()
        rss1 = proc.memory_info().rss
        live_objects = sum(1 for o in gc.get_objects() if isinstance(o, Session))
        result = {
            "rss_start": rss0,
            "rss_end": rss1,
            "wall_s": wall,
            "hub_sessions": len(hub.sessions),
            "session_objects": live_objects,
        }
        await hub.shutdown(grace_s=1.0)
        return result

    return asyncio.run(main())


def run(
    sessions: int = 1000, streaming: int = 500, cycles: int = 10_000, progress: bool = True
) -> tuple[list[Table], dict[str, Any]]:
    out: dict[str, Any] = {}

    def say(msg: str) -> None:
        if progress:
            print(f"  memory {msg}", file=sys.stderr, flush=True)

    with Server("hub", provider="whisper") as server:
        time.sleep(1.0)
        out["idle_whisper_mb"] = server.rss() / MB
    say(f"idle hub with whisper loaded: {out['idle_whisper_mb']:.1f} MB")

    with Server("hub") as server:
        time.sleep(1.0)
        out["idle_cold_mb"] = server.rss() / MB
        run_loadgen(["--url", server.url, "--sessions", "3", "--stagger", "0", "--pace", "fast"])  # warm-up
        time.sleep(0.5)
        idle = server.rss()
        out["idle_mb"] = idle / MB
        with Sampler(server.ps) as sampler:
            r = run_loadgen(
                [
                    "--url",
                    server.url,
                    "--sessions",
                    str(sessions),
                    "--mode",
                    "idle",
                    "--stagger",
                    "2",
                    "--hold",
                    "3",
                ]
            )
        _, peak = sampler.window(r["t_all_started"], r["t_all_started"] + 3)
        out["idle_sessions"] = sessions
        out["idle_session_kb"] = (peak - idle) / 1024 / sessions
        out["idle_errors"] = sum(1 for c in r["clients"] if c["error"])
        say(f"{sessions} idle sessions: {out['idle_session_kb']:.1f} KB each")

    with Server("hub") as server:
        run_loadgen(["--url", server.url, "--sessions", "3", "--stagger", "0", "--pace", "fast"])
        time.sleep(0.5)
        idle = server.rss()
        with Sampler(server.ps) as sampler:
            r = run_loadgen(["--url", server.url, "--sessions", str(streaming), "--stagger", "2"])
        _, peak = sampler.window(r["t_start"], r["t_end"])
        out["streaming_sessions"] = streaming
        out["streaming_session_kb"] = (peak - idle) / 1024 / streaming
        out["streaming_errors"] = sum(1 for c in r["clients"] if c["error"])
        say(f"{streaming} streaming sessions: {out['streaming_session_kb']:.1f} KB each")

        run_loadgen(["--url", server.url, "--sessions", "200", "--mode", "cycles", "--concurrency", "50"])
        time.sleep(0.5)
        rss0 = server.rss()
        t = time.monotonic()
        r = run_loadgen(
            ["--url", server.url, "--sessions", str(cycles), "--mode", "cycles", "--concurrency", "50"],
            timeout=900,
        )
        wall = time.monotonic() - t
        time.sleep(1.0)
        out["ws_cycles"] = {
            "rss_start": rss0,
            "rss_end": server.rss(),
            "wall_s": wall,
            "errors": sum(1 for c in r["clients"] if c["error"]),
        }
        say(f"{cycles} WebSocket cycles: {(out['ws_cycles']['rss_end'] - rss0) / MB:+.1f} MB")

    child = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--inproc", str(cycles)],
        cwd=ROOT,
        capture_output=True,
        timeout=900,
        check=False,
    )
    if child.returncode == 0:
        out["inproc_cycles"] = json.loads(child.stdout.decode().strip().splitlines()[-1])
        say(
            f"{cycles} in-process cycles: "
            f"{(out['inproc_cycles']['rss_end'] - out['inproc_cycles']['rss_start']) / MB:+.1f} MB"
        )
    else:
        out["inproc_cycles"] = {"error": child.stderr.decode(errors="replace")[-500:]}

    t1 = Table("Memory (hub RSS)", ["what", "value"])
    t1.rows += [
        ["idle hub, provider none, before any session", f"{out['idle_cold_mb']:.1f} MB"],
        ["idle hub, provider none, after a warm-up session", f"{out['idle_mb']:.1f} MB"],
        ["idle hub, whisper tiny.en loaded", f"{out['idle_whisper_mb']:.1f} MB"],
        [f"per idle session ({sessions} open, no audio)", f"{out['idle_session_kb']:.1f} KB"],
        [
            f"per streaming session ({streaming} at real-time pace, VAD only)",
            f"{out['streaming_session_kb']:.1f} KB",
        ],
    ]
    t2 = Table(
        f"Memory after {cycles:,} session open/close cycles",
        ["path", "RSS start MB", "RSS end MB", "Δ MB", "cycles/s", "left open", "errors"],
    )
    ws = out["ws_cycles"]
    t2.rows.append(
        [
            "WebSocket (50 at a time)",
            ws["rss_start"] / MB,
            ws["rss_end"] / MB,
            (ws["rss_end"] - ws["rss_start"]) / MB,
            cycles / ws["wall_s"],
            "–",
            ws["errors"],
        ]
    )
    ip = out["inproc_cycles"]
    if "error" in ip:
        t2.rows.append(["in process (Hub.open/end)", "failed", "–", "–", "–", "–", "–"])
        t2.notes.append(f"in-process run failed: {ip['error']}")
    else:
        t2.rows.append(
            [
                "in process (Hub.open/feed/end)",
                ip["rss_start"] / MB,
                ip["rss_end"] / MB,
                (ip["rss_end"] - ip["rss_start"]) / MB,
                cycles / ip["wall_s"],
                f"{ip['hub_sessions']} sessions, {ip['session_objects']} Session objects",
                0,
            ]
        )
    t2.notes.append(
        "RSS start = after 200 warm-up cycles; Δ within a few MB = nothing left behind per session"
    )
    return [t1, t2], out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--streaming", type=int, default=500)
    ap.add_argument("--cycles", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="200 idle / 100 streaming sessions, 1,000 cycles")
    ap.add_argument("--inproc", type=int, metavar="CYCLES", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.inproc:
        sys.stdout.write(json.dumps(inproc_cycles(args.inproc)) + "\n")
        return
    if args.quick:
        args.sessions, args.streaming, args.cycles = 200, 100, 1000
    tables, out = run(args.sessions, args.streaming, args.cycles)
    print_tables(tables)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
