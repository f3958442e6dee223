"""``asrhub bench``: run the benchmarks of tests/perf/ and print their tables.

    asrhub bench [scale|latency|throughput|memory|talkers|all] [--quick] [--sizes N …] [--json FILE]
                 [--markdown FILE] [--profile N]

``scale``       N concurrent VAD-only WebSocket sessions at real-time pace (N = 100 … 2000), the hub
                against a bare aiohttp + webrtcvad server in the same run: latency, CPU, RSS/session.
``cost``        in process, no sockets: CPU µs per frame of a hub session vs bare webrtcvad, the
                functions that take the time (cProfile) and what a session holds (tracemalloc).
``latency``     end of speech → transcript.final with whisper, next to faster-whisper's own time.
``throughput``  K = 1, 2, 4, 8 unpaced whisper sessions against sequential direct faster-whisper.
``memory``      idle hub, per idle / streaming session, RSS after 10,000 open/close cycles.
``talkers``     K = 1 … 16 real-time whisper talkers: end of speech → final and throughput, for the
                engine one-at-a-time, batched, on a 1-node and a 2-node local Ray cluster
                (``--k``; about 12 minutes; not part of ``all``).
``all``         all five (about 10 minutes on 2 cores; ``--quick``: about 2).

Servers and the load generator run as separate processes; the numbers depend on the machine,
which is printed first. The scripts live in the source checkout (tests/perf/), not in the wheel.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

BENCHES = ("scale", "cost", "latency", "throughput", "memory")


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench",
        help="run the benchmarks (scale, cost, latency, throughput, memory) and print tables",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("which", nargs="?", choices=(*BENCHES, "talkers", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in about 2 minutes")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="N", help="scale: session counts")
    parser.add_argument("--k", type=int, nargs="+", metavar="K", help="throughput, talkers: sessions")
    parser.add_argument("--profile", type=int, metavar="N", help="scale: py-spy record the hub at N sessions")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every table and raw result as JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the tables as Markdown")
    parser.set_defaults(func=run)


def perf_dir() -> Path | None:
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        candidate = base / "tests" / "perf"
        if (candidate / "common.py").is_file():
            return candidate
    return None


def run(args: argparse.Namespace) -> int:
    perf = perf_dir()
    if perf is None:
        print("asrhub bench: tests/perf/ not found; run it from a source checkout of asrhub", file=sys.stderr)
        return 2
    for path in (str(perf), str(perf.parents[1])):
        if path not in sys.path:
            sys.path.insert(0, path)
    common = importlib.import_module("common")
    machine = common.Table("Machine", ["", ""], [[k, v] for k, v in common.machine().items()])
    common.print_tables([machine])
    which = BENCHES if args.which == "all" else (args.which,)
    tables: list[Any] = [machine]
    raw: dict[str, Any] = {}
    started = time.monotonic()
    for name in which:
        t = time.monotonic()
        print(f"running {name} …", file=sys.stderr, flush=True)
        if name == "scale":
            mod = importlib.import_module("bench_scale")
            sizes = tuple(args.sizes or (mod.QUICK_SIZES if args.quick else mod.SIZES))
            result, raw[name] = mod.run(sizes, profile=args.profile)
        elif name == "cost":
            mod = importlib.import_module("bench_pipeline_cost")
            result, raw[name] = mod.run(100 if args.quick else 300)
        elif name == "latency":
            mod = importlib.import_module("bench_latency")
            result, raw[name] = mod.run(quick=args.quick)
        elif name == "talkers":
            mod = importlib.import_module("bench_talkers")
            result, raw[name] = mod.run(tuple(args.k or mod.KS), quick=args.quick)
        elif name == "throughput":
            mod = importlib.import_module("bench_throughput")
            ks = tuple(args.k or (mod.QUICK_KS if args.quick else mod.KS))
            result, raw[name] = mod.run(ks, quick=args.quick)
        else:
            mod = importlib.import_module("bench_memory")
            sizes = (200, 100, 1000) if args.quick else (1000, 500, 10_000)
            result, raw[name] = mod.run(*sizes)
        elapsed = time.monotonic() - t
        for table in result:
            table.notes.append(f"{name}: {elapsed:.0f} s")
        common.print_tables(result)
        tables += result
    print(f"total: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps({"tables": [t.to_dict() for t in tables], "raw": raw}, indent=1, default=str)
        )
    if args.markdown:
        args.markdown.write_text(common.markdown(tables))
    return 0
