"""The benchmarks run: each one at a tiny size, against real servers on 127.0.0.1.

No speed is asserted here (speed goals live in the printed benchmark tables, docs/benchmarks.md);
these tests only prove that the scripts, the load generator and the servers work together and
that every measurement they print comes from real events.
"""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_compat
import bench_format
import bench_grpc_wyoming
import bench_latency
import bench_memory
import bench_metering
import bench_multichannel
import bench_partials
import bench_pipeline_cost
import bench_scale
import bench_talkers
import bench_throughput
from common import Server, run_loadgen

pytestmark = pytest.mark.timeout(120)


def test_scale_runs_against_hub_and_bare_baseline() -> None:
    tables, runs = bench_scale.run(sizes=(5,), progress=False, stagger=0.2)
    assert [r["kind"] for r in runs] == ["bare", "hub"]
    for r in runs:
        assert "failed" not in r, r
        assert r["ok"] == 5 and r["errors"] == 0, r
        assert math.isfinite(r["p99"]) and r["p99"] > 0
        # both servers put the end of speech at the same place in the audio (same VAD rule)
        assert abs(r["vad_offset_ms"]) < 200
    assert len(tables[1].rows) == 1  # the hub / bare ratio row


def test_whisper_latency_and_throughput_run() -> None:
    _, rows = bench_latency.run(quick=True, fixtures=("quick_fox.wav",), progress=False)
    assert len(rows) == 1 and rows[0]["error"] is None
    assert "fox" in rows[0]["text"].lower()
    assert rows[0]["inference_ms"] > 0 and math.isfinite(rows[0]["added_ms"])
    _, rows = bench_throughput.run(ks=(1,), progress=False, fixtures=("quick_fox.wav",), baseline=False)
    assert rows[0]["finals"] == rows[0]["expected_finals"] == 1
    assert rows[0]["xrt"] > 0


def test_memory_cycles_leave_nothing_open() -> None:
    result = bench_memory.inproc_cycles(50, warmup=5)
    assert result["hub_sessions"] == 0 and result["session_objects"] == 0
    with Server("hub") as server:
        cycles = run_loadgen(
            ["--url", server.url, "--sessions", "20", "--mode", "cycles", "--concurrency", "5"]
        )
        idle = run_loadgen(
            ["--url", server.url, "--sessions", "5", "--mode", "idle", "--stagger", "0.2", "--hold", "0.3"]
        )
    assert [c["error"] for c in cycles["clients"] + idle["clients"]] == [None] * 25


def test_pipeline_cost_counts_real_events() -> None:
    tables, out = bench_pipeline_cost.run(sessions=20, top=5, progress=False)
    assert tables[0].rows[1][-1] == "20/20"  # every hub session saw its speech_ended
    assert out["hub_us"] > 0 and out["bare_us"] > 0 and out["hub_bytes"] > out["bare_bytes"] > 0


def test_talkers_runs_with_the_batched_engine() -> None:
    _, rows = bench_talkers.run(ks=(2,), setups=("batched",), progress=False)
    assert len(rows) == 1 and rows[0]["errors"] == [], rows
    assert rows[0]["finals"] == rows[0]["expected_finals"] == 6
    assert "fox" in rows[0]["texts"][0].lower()
    assert math.isfinite(rows[0]["p50_s"]) and rows[0]["throughput"] > 0 and rows[0]["engine_calls"] >= 1


def test_grpc_wyoming_latency_runs_on_all_three_transports() -> None:
    tables, rows = bench_grpc_wyoming.run(("quick_fox.wav",), repeat=1)
    assert sorted(r["transport"] for r in rows) == ["grpc", "websocket", "wyoming"]
    for r in rows:  # each transport's final arrived, after its end of audio, with the right words
        assert math.isfinite(r["latency_ms"]) and r["latency_ms"] > 0, r
        assert r["wer"] < 0.3, r
    assert len(tables[0].rows) == 3


# deepgram-sdk 7 imports websockets' legacy client names (its fallback for websockets < 14)
@pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets.legacy")
def test_compat_latency_runs_on_all_three_apis() -> None:
    tables, rows = bench_compat.run(("quick_fox.wav",), repeat=1)
    assert sorted(r["api"] for r in rows) == ["deepgram", "openai_realtime", "websocket"]
    for r in rows:  # each API's final arrived after the end of speech, with the right words
        assert math.isfinite(r["latency_ms"]) and r["latency_ms"] > 0, r
        assert r["wer"] < 0.3, r
    assert len(tables[0].rows) == 3


def test_format_cost_formats_every_final() -> None:
    rows = bench_format.run(30)
    assert [r[0] for r in rows] == list(bench_format.CONFIGS)
    assert all(r[1] > 0 and r[2] <= r[3] and r[5] > 5 for r in rows)


def test_bench_metering_smoke() -> None:
    """The metering benchmark runs end to end (a redis-server of its own) and counts writes."""
    cpu, redis = bench_metering.run(sessions=10, repeat=1, redis_sessions=5, seconds=1)
    assert len(cpu.rows) == 2 and cpu.rows[1][1] > 0
    assert [row[0] for row in redis.rows] == [1, 10, 100]
    assert all(row[2] > 0 and row[3] >= 1 for row in redis.rows)  # commands and pipelines seen


def test_partials_bench_measures_real_partials_and_finals() -> None:
    audio = bench_partials.talk(("address_time.wav",), ("Front_Left.wav",))
    with Server("hub", provider="whisper") as server:
        bench_partials.one(server, "off", bench_partials.talk_warmup(), 100)  # loads the model
        row = bench_partials.one(server, "after", audio, 100)
    assert row["finals"] == 2 and "baker" in row["final_texts"][0].lower(), row
    assert row["partials"] >= 1 and all(math.isfinite(x) and x > 0 for x in row["lag_s"]), row
    assert row["stable_rewritten"] == 0 and math.isfinite(row["e2e_s"][0])


def test_multichannel_bench_measures_every_case() -> None:
    rows = asyncio.run(bench_multichannel.run(1))
    assert [r[0] for r in rows] == ["mono (channel 0 alone)", "stereo, mixed", "stereo, multichannel"]
    assert rows[2][1] >= 2  # a final from each channel
    assert all(r[2] > 0 and r[4] > 0 for r in rows)
