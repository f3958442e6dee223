"""Jobs that call back in a cluster (issue 27 item 3): two ``asrhub serve`` nodes share a real
``redis-server``; the node running a job is SIGKILLed mid-transcription, the other node takes the
job over when its lease expires, runs it again, and the receiver (a real aiohttp server on
127.0.0.1) gets exactly one signed callback for the job id. Before issue 27 a job lived nowhere
(the request was answered synchronously by the node that died), so nothing could call back."""

from __future__ import annotations

import io
import json
import signal
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from asrhub.door.keys import fingerprint
from asrhub.jobs.signing import key_secret
from tests.audio_utils import fixture
from tests.transports.test_jobs import Receiver, verify

from .conftest import Node, Redis, start_nodes, until

KEY = "cluster-jobs-key"
SECRET = "cluster-jobs-secret"
LEASE_S = 2.0
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def nodes(redis_server: Redis) -> Iterator[list[Node]]:
    env = {
        "ASRHUB_CLUSTER__REDIS_URL": redis_server.url,
        "ASRHUB_CLUSTER__LEASE_S": str(LEASE_S),
        "ASRHUB_API_KEYS": KEY,
        "ASRHUB_DEFAULT_PROVIDER": "whisper",
        "ASRHUB_JOBS__CALLBACK_SECRET": SECRET,
        "ASRHUB_JOBS__CALLBACK_ALLOW": "127.0.0.1, localhost",
        "ASRHUB_JOBS__CONCURRENCY": "1",
        "ASRHUB_JOBS__RETRY_BASE_S": "0.05",
        "ASRHUB_METRICS__OPERATOR_SAMPLE": "0",
    }
    hubs = [Node(f"jobs{i}", env) for i in (1, 2)]
    try:
        start_nodes(hubs)
        yield hubs
    finally:
        for node in hubs:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
            node.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield rec
    await runner.cleanup()


async def test_a_node_killed_mid_job_is_replaced_and_the_callback_arrives_once(
    nodes: list[Node], receiver: Receiver
) -> None:
    first, second = nodes
    assert first.proc is not None and second.proc is not None
    second.proc.send_signal(signal.SIGSTOP)  # the first node claims the job
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            audio = io.BytesIO(fixture("long_40s.wav").read_bytes())
            async with http.post(f"{first.url}/v1/listen?callback={receiver.url}", data=audio) as resp:
                assert resp.status == 202, await resp.text()
                job_id = (await resp.json())["request_id"]

            async def running() -> bool:
                async with http.get(f"{first.url}/v1/jobs/{job_id}") as r:
                    return (await r.json())["status"] == "running"

            await until(running, 60, "the first node to claim the job", every=0.02)
            first.kill()  # SIGKILL, mid-transcription: nothing was posted yet
            assert receiver.calls == []
        second.proc.send_signal(signal.SIGCONT)
        calls = await receiver.wait_calls(1)
        async with aiohttp.ClientSession(headers=AUTH) as http:

            async def finished() -> dict[str, object] | None:
                async with http.get(f"{second.url}/v1/jobs/{job_id}") as r:
                    body = dict(await r.json())
                    return body if body["status"] in ("done", "failed") else None

            status = await until(finished, 60, "the job to finish on the second node")
        assert status["status"] == "done" and status["runs"] == 2 and status["attempts"] == 1, status
        # "done" is recorded after the 2xx and checked before every POST by every node, and the
        # first node is dead: no other callback can come for this job
        assert len(receiver.calls) == len(calls) == 1
        headers, body = calls[0]
        assert headers["Idempotency-Key"] == job_id
        assert verify(key_secret(SECRET, fingerprint(KEY)), body, headers["X-Asrhub-Signature"])
        answer = json.loads(body)
        assert answer["metadata"]["request_id"] == job_id
        assert answer["results"]["channels"][0]["alternatives"][0]["transcript"]
    finally:
        if second.proc.poll() is None:
            second.proc.send_signal(signal.SIGCONT)


async def test_without_a_cluster_a_jobs_status_reaches_the_worker_that_holds_it(receiver: Receiver) -> None:
    """``asrhub serve --workers 2`` without Redis: each worker holds its own jobs; a status
    request on a new connection reaches either worker and is forwarded to the owner (before,
    about half of them were 404)."""
    env = {
        "ASRHUB_API_KEYS": KEY,
        "ASRHUB_JOBS__CALLBACK_SECRET": SECRET,
        "ASRHUB_JOBS__CALLBACK_ALLOW": "127.0.0.1",
        "ASRHUB_METRICS__OPERATOR_SAMPLE": "0",
    }
    node = Node("jobs-workers", env, ("--workers", "2"))
    try:
        start_nodes([node])
        ids = []
        for _ in range(2):
            form = aiohttp.FormData()
            form.add_field("file", fixture("quick_fox.wav").read_bytes(), filename="fox.wav")
            form.add_field("callback_url", receiver.url)
            async with (
                aiohttp.ClientSession(headers=AUTH) as http,
                http.post(f"{node.url}/v1/transcribe", data=form) as resp,
            ):
                assert resp.status == 202, await resp.text()
                ids.append((await resp.json())["job_id"])
        await receiver.wait_calls(2)
        for job_id in ids:
            for _ in range(8):  # each on a new connection: the kernel picks the worker
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(headers=AUTH, connector=connector) as http,
                    http.get(f"{node.url}/v1/jobs/{job_id}") as resp,
                ):
                    assert resp.status == 200, (job_id, await resp.text())
                    assert (await resp.json())["id"] == job_id
    finally:
        node.close()
