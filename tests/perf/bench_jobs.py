"""Callback delay of jobs that call back (issue 27 item 3): from the moment a job's result is
ready (transcribed and formatted) to the receiver's 2xx answer to its callback POST — what the
queue, signing and delivery add on top of the transcription itself.

Run: ``python tests/perf/bench_jobs.py [--jobs 40]``. A real hub (faster-whisper tiny.en, a
thread of this process, ``jobs.concurrency`` 2) takes ``--jobs`` Deepgram pre-recorded requests
with ``callback=`` for tests/fixtures/quick_fox.wav, all submitted at once; a real aiohttp
receiver on 127.0.0.1 answers 200. The hub records, per job, the seconds from result ready to
the 2xx answer; the script prints p50 / p95 / max of those, the end-to-end time (submission to
the callback's arrival) and the machine's load (``uptime``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
from aiohttp import web

from asrhub.settings.schema import JobsSettings
from asrhub.transports.jobs import JOBS
from tests.audio_utils import fixture
from tests.transports.conftest import AUTH, ServerThread, make_settings


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(n: int) -> dict[str, float]:
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        arrived[request.headers["X-Asrhub-Job-Id"]] = time.monotonic()
        if len(arrived) >= n:
            done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    jobs = JobsSettings(callback_secret="bench", callback_allow=("127.0.0.1",), max_queued=n)
    audio = fixture("quick_fox.wav").read_bytes()
    sent: dict[str, float] = {}
    with ServerThread(make_settings(jobs=jobs)) as server:
        async with aiohttp.ClientSession(headers=AUTH) as http:

            async def submit() -> None:
                start = time.monotonic()
                async with http.post(f"{server.http}/v1/listen?callback={url}", data=io.BytesIO(audio)) as r:
                    assert r.status == 202, await r.text()
                    sent[(await r.json())["request_id"]] = start

            await asyncio.gather(*(submit() for _ in range(n)))
            await asyncio.wait_for(done.wait(), 600)
        for _ in range(6000):  # each delay is recorded just after its 2xx: at most a minute more
            if server.call(lambda: len(server.app[JOBS].delivered)) >= n:
                break
            await asyncio.sleep(0.01)
        delays = [d for _, d in server.call(lambda: list(server.app[JOBS].delivered))]
    await runner.cleanup()
    e2e = [arrived[j] - sent[j] for j in sent]
    return {
        "jobs": float(len(delays)),
        "p50_ms": 1000 * statistics.median(delays),
        "p95_ms": 1000 * pct(delays, 0.95),
        "max_ms": 1000 * max(delays),
        "e2e_p50_s": statistics.median(e2e),
        "e2e_max_s": max(e2e),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=40)
    args = parser.parse_args()
    result = asyncio.run(run(args.jobs))
    print(
        f"{int(result['jobs'])} jobs: result ready → callback answered p50 {result['p50_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms; submission → callback "
        f"p50 {result['e2e_p50_s']:.2f} s, max {result['e2e_max_s']:.2f} s"
    )
    print("load:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
