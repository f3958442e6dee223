#!/usr/bin/env python3
"""K concurrent real-time talkers with whisper, for four engine set-ups (issue 14).

    python tests/perf/bench_talkers.py [--k 1 2 4 8 16] [--setups before batched ray1 ray2] [--quick]
    asrhub bench talkers [--k …] [--quick]

Each of K WebSocket sessions (tests/perf/loadgen.py, its own process) streams the same three
English fixture utterances, 1 s of room tone apart, at real-time pace in 100 ms PCM16 frames,
with VAD endpointing (500 ms hangover) and partials on (the default config); session starts are
spread over 0.5 s, so utterances of different talkers end close together. Per final:
``end of speech → final`` = receive(transcript.final) − send(frame holding the utterance's true
end), so it includes the hangover. Throughput = seconds of audio streamed by all sessions / wall
seconds from the first frame to the last ``session.closed``; with real-time talkers it can only
fall below K × audio / (audio + tail) when the engine cannot keep up.

Set-ups (all the bundled tiny.en, int8, beam 5, in a hub subprocess):

``before``   the engine as it was before the provider subject: one clip per engine call, one
             decode at a time, partials only when the engine is idle
             (``batch_max = 1, batch_window_ms = 0, partial_workers = 0``).
``default``  the provider subject with its defaults on CPU: a lane for finals and one for
             partials, no cross-session batching (``batch_max = 0`` = 1 on CPU).
``early``    the defaults with early finals (``limits.early_final_ms = 200``).
``batched``  the same with cross-session batches of up to 4 clips (20 ms window).
``ray1``     the defaults, the model in one Ray actor (on one node) of a two-node Ray cluster
             on 127.0.0.1.
``ray2``     two replicas spread over the two nodes (both nodes on this machine's 2 cores: this
             shows the cost of the hop and of spreading, not more hardware).

All hubs run for the whole benchmark and the set-ups take turns at each K, in a rotating order,
so a change in the machine's load (it is shared) hits them alike.

The machine is shared: every row carries the whole machine's busy CPU % during the run and the
1-minute load average before it. No GPU here: the ``device = "cuda"`` run was not done.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_latency import scrape
from common import Sampler, Server, Table, percentile, print_tables, run_loadgen, stream_audio

KS = (1, 2, 4, 8, 16)
QUICK_KS = (1, 4)
SETUPS = ("before", "default", "early", "batched", "ray1", "ray2")
FIXTURES = "quick_fox.wav,weather_question.wav,reminder.wav"
HANGOVER_MS = 500
GAP_S = 1.0
STAGGER_S = 0.5
WHISPER = "ASRHUB_PROVIDERS__WHISPER__"
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}

ENGINE_ENV = {
    "before": {"BATCH_MAX": "1", "BATCH_WINDOW_MS": "0", "PARTIAL_WORKERS": "0"},
    "default": {},
    "early": {},
    "batched": {"BATCH_MAX": "4", "BATCH_WINDOW_MS": "20"},
    "ray1": {"RAY_REPLICAS": "1"},
    "ray2": {"RAY_REPLICAS": "2"},
}
LIMITS_ENV = {"early": {"ASRHUB_LIMITS__EARLY_FINAL_MS": "200"}}
"""Hub settings beyond [providers.whisper] for a set-up: early finals start the final decode
200 ms into the silence instead of after the 500 ms hangover."""
LABELS = {
    "before": "in-process, one at a time (before)",
    "default": "in-process, defaults (partial lane)",
    "early": "in-process, defaults + early finals (200 ms)",
    "batched": "in-process, batched (batch_max 4)",
    "ray1": "Ray, 1 replica (one node)",
    "ray2": "Ray, 2 nodes, 2 replicas",
}


@contextlib.contextmanager
def ray_cluster(nodes: int) -> Iterator[tuple[str, dict[str, str]]]:
    """A local Ray cluster of ``nodes`` nodes on 127.0.0.1 (two CPUs each: room for the 1-replica
    and the 2-replica hub at once), in a private temp folder; yields its address and the
    environment a hub needs to join it."""
    base = tempfile.mkdtemp(prefix="asrhub-ray-", dir="/tmp")
    os.makedirs(os.path.join(base, "ray"))
    env = {**RAY_ENV, "RAY_TMPDIR": base}
    os.environ.update(env)  # before ray is imported: nodes bind to 127.0.0.1
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "object_store_memory": 80 << 20, "include_dashboard": False},
    )
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=2, object_store_memory=80 << 20)
        cluster.wait_for_nodes()
        yield cluster.address, env
    finally:
        cluster.shutdown()
        shutil.rmtree(base, ignore_errors=True)


def one_run(server: Server, k: int, audio_s: float, n_utts: int) -> dict[str, Any]:
    config = {"vad": {"silence_ms": HANGOVER_MS}}
    calls0 = scrape(server, "asrhub_inference_seconds_count")
    load_before = os.getloadavg()[0]
    with Sampler(server.ps) as sampler:
        result = run_loadgen(
            [
                "--url",
                server.url,
                "--sessions",
                str(k),
                "--pace",
                "realtime",
                "--fixture",
                FIXTURES,
                "--gap",
                str(GAP_S),
                "--stagger",
                str(STAGGER_S),
                "--lead",
                "0.5",
                "--tail",
                "1.5",
                "--hangover-ms",
                str(HANGOVER_MS),
                "--config",
                json.dumps(config),
                "--timeout",
                "180",
            ]
        )
    clients = result["clients"]
    closed = [c["t_closed"] for c in clients if c["t_closed"] == c["t_closed"]]
    t0 = min(c["t_first"] for c in clients)
    wall = (max(closed) - t0) if closed else float("nan")
    e2e = [f["e2e_ms"] / 1000 for c in clients for f in c["finals"] if f["text"]]
    busy = sampler.machine_busy(t0, max(closed) if closed else time.monotonic())
    hub_cpu, _rss = sampler.window(t0, max(closed) if closed else time.monotonic())
    return {
        "k": k,
        "finals": sum(len(c["finals"]) for c in clients),
        "expected_finals": k * n_utts,
        "errors": [c["error"] for c in clients if c["error"]],
        "p50_s": percentile(e2e, 50),
        "p95_s": percentile(e2e, 95),
        "max_s": max(e2e) if e2e else float("nan"),
        "throughput": k * audio_s / wall,
        "engine_calls": scrape(server, "asrhub_inference_seconds_count") - calls0,
        "machine_busy_pct": busy,
        "hub_cpu_pct": hub_cpu,
        "load1_before": load_before,
        "late_frames": sum(c["late"] for c in clients),
        "texts": [f["text"] for f in clients[0]["finals"]],
    }


def hub_env(
    setup: str, overrides: dict[str, str] | None, ray: tuple[str, dict[str, str]] | None
) -> dict[str, str]:
    env = {WHISPER + key.upper(): value for key, value in {**ENGINE_ENV[setup], **(overrides or {})}.items()}
    env.update(LIMITS_ENV.get(setup, {}))
    if setup.startswith("ray"):
        assert ray is not None
        address, ray_env = ray
        env.update(ray_env)
        env[WHISPER + "RAY_ADDRESS"] = address
    return env


def run(
    ks: tuple[int, ...] = KS,
    setups: tuple[str, ...] = SETUPS,
    progress: bool = True,
    quick: bool = False,
    overrides: dict[str, str] | None = None,
) -> tuple[list[Table], list[dict[str, Any]]]:
    """Every set-up's hub runs for the whole benchmark and the set-ups take turns at each K (in a
    rotating order), so a change in the machine's load hits them alike.

    ``overrides``: [providers.whisper] settings applied to every set-up (``{"cpu_threads": "1"}``)."""
    if quick:
        ks = tuple(k for k in ks if k in QUICK_KS) or QUICK_KS
    if not _has_ray():
        print("  ray set-ups skipped (pip install asrhub[ray])", file=sys.stderr)
        setups = tuple(s for s in setups if not s.startswith("ray"))
    audio = stream_audio(FIXTURES, lead_s=0.5, tail_s=1.5, gap_s=GAP_S)
    n_utts = len(audio.utterances)
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        ray = stack.enter_context(ray_cluster(2)) if any(s.startswith("ray") for s in setups) else None
        servers: dict[str, Server] = {}
        for setup in setups:
            server = stack.enter_context(
                Server("hub", provider="whisper", env=hub_env(setup, overrides, ray))
            )
            run_loadgen(
                ["--url", server.url, "--sessions", "1", "--pace", "fast", "--fixture", "quick_fox.wav"]
            )
            servers[setup] = server
        for i, k in enumerate(ks):
            for setup in setups[i % len(setups) :] + setups[: i % len(setups)]:
                row = one_run(servers[setup], k, audio.duration_s, n_utts)
                row["setup"] = setup
                rows.append(row)
                if progress:
                    print(
                        f"  {setup} K={k}: p50 {row['p50_s']:.2f} s p95 {row['p95_s']:.2f} s, "
                        f"{row['throughput']:.2f} audio s/s, {row['engine_calls']:.0f} calls, "
                        f"machine {row['machine_busy_pct']:.0f} %, load {row['load1_before']:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
    rows.sort(key=lambda r: (setups.index(r["setup"]), r["k"]))
    table = Table(
        "K real-time talkers, whisper tiny.en: end of speech → final (hangover 500 ms included)",
        [
            "set-up",
            "K",
            "p50 s",
            "p95 s",
            "max s",
            "audio s / wall s",
            "engine calls",
            "finals",
            "machine busy %",
            "load (1 min) before",
        ],
    )
    for r in rows:
        table.rows.append(
            [
                LABELS[r["setup"]],
                r["k"],
                r["p50_s"],
                r["p95_s"],
                r["max_s"],
                r["throughput"],
                int(r["engine_calls"]),
                f"{r['finals']}/{r['expected_finals']}",
                r["machine_busy_pct"],
                r["load1_before"],
            ]
        )
    table.notes.append(
        "machine busy %: every process on the machine (2 cores = 200 %); other work shared it. "
        "No GPU: the device = cuda run was not done."
    )
    return [table], rows


def _has_ray() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, nargs="+", default=list(KS))
    ap.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="[providers.whisper] overrides")
    args = ap.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    tables, rows = run(tuple(args.k), tuple(args.setups), quick=args.quick, overrides=overrides)
    print_tables(tables)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
