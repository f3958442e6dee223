"""The workers benchmark runs: ``asrhub serve --workers 2`` at a tiny size (the bare baseline's
server and the load generator are shared with bench_scale's smoke test).

No speed is asserted (the numbers live in docs/benchmarks.md); this proves the speech-heavy load
generator, the two-worker server and the process-tree sampling work together, and that the
pings and VAD events it measures are real."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_workers

pytestmark = pytest.mark.timeout(180)


def test_speech_heavy_load_runs_against_two_workers() -> None:
    r = bench_workers.one_run("w2", 8, 3.0)
    assert r["errors"] == 0 and r["lost_pongs"] == 0, r
    assert r["pings"] >= 8 and math.isfinite(r["p99"]) and r["p99"] > 0
    assert r["speech_events"] >= 8  # speech starts and ends every second in every session
    assert r["server_cpu"] > 0 and r["frames"] > 0
