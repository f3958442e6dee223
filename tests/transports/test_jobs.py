"""Jobs that call back (issue 27 item 3) on a real hub (faster-whisper tiny.en): the official
``deepgram-sdk`` with ``callback`` gets Deepgram's accepted response and a real aiohttp receiver
on 127.0.0.1 gets the synchronous answer, signed; ``/v1/transcribe`` with ``callback_url`` is
retried after a 500; a full queue is ``capacity`` in each protocol's shape; loopback targets and
names that resolve to loopback are refused unless allowed. Before issue 27 ``callback`` was
ignored (the SDK got the synchronous answer, nothing called back), so each test fails there."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest
from aiohttp import web
from deepgram.core.api_error import ApiError
from deepgram.types.listen_v1accepted_response import ListenV1AcceptedResponse

from asrhub.door.keys import fingerprint
from asrhub.errors import HubError
from asrhub.jobs.delivery import Callback, Deliverer
from asrhub.jobs.signing import key_secret
from asrhub.jobs.targets import Allow, check_target
from asrhub.settings.schema import JobsSettings
from tests.audio_utils import fixture, fixture_entry, wer
from tests.compat.test_deepgram import client_for
from tests.transports.conftest import AUTH, KEY, OTHER_KEY, ServerThread, make_settings

pytestmark = [
    pytest.mark.filterwarnings("ignore:websockets.exceptions.InvalidStatusCode:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:websockets.legacy"),
]

SECRET = "server-secret-for-tests"
WAIT = 120.0
JOBS = JobsSettings(
    callback_secret=SECRET,
    callback_allow=("127.0.0.1",),
    max_queued=2,
    concurrency=1,
    retry_base_s=0.05,
    retry_max_s=0.2,
)


def verify(secret: str, body: bytes, header: str) -> bool:
    """The receiver's check, as docs/security.md gives it."""
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


@dataclass
class Receiver:
    """A callback receiver: records every request; ``fail_first`` answers 500 to the first
    attempt of each job; ``hold`` keeps every answer until it is set."""

    url: str = ""
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    fail_first: bool = False
    hold: asyncio.Event | None = None
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.arrived:
            self.calls.append((dict(request.headers), body))
            self.methods.append(request.method)
            self.arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_first and request.headers.get("X-Asrhub-Attempt") == "1":
            return web.Response(status=500, text="not now")
        return web.Response(text="ok")

    async def wait_calls(self, n: int) -> list[tuple[dict[str, str], bytes]]:
        async with asyncio.timeout(WAIT), self.arrived:
            await self.arrived.wait_for(lambda: len(self.calls) >= n)
        return self.calls


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/hook", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}/hook"
    yield rec
    if rec.hold is not None:
        rec.hold.set()
    await runner.cleanup()


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    with ServerThread(make_settings(keys=(KEY, OTHER_KEY), jobs=JOBS)) as hub:
        yield hub


async def job_status(server: ServerThread, job_id: str, key: str = KEY) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http,
        http.get(f"{server.http}/v1/jobs/{job_id}") as resp,
    ):
        return resp.status, await resp.json()


async def settled(server: ServerThread, job_id: str) -> dict[str, Any]:
    """The job's status once it is done or failed (the state is set just after the POST)."""
    async with asyncio.timeout(WAIT):
        while True:
            status, body = await job_status(server, job_id)
            assert status == 200, body
            if body["status"] in ("done", "failed"):
                return body
            await asyncio.sleep(0.05)


async def test_deepgram_sdk_callback_gets_accepted_then_the_signed_answer(
    server: ServerThread, receiver: Receiver
) -> None:
    entry = fixture_entry("quick_fox.wav")
    async with httpx.AsyncClient(timeout=WAIT) as http:
        accepted = await client_for(server, http=http).listen.v1.media.transcribe_file(
            request=fixture("quick_fox.wav").read_bytes(),
            model="nova-3",
            smart_format=True,
            callback=receiver.url,
            callback_method="PUT",
        )
    assert isinstance(accepted, ListenV1AcceptedResponse), accepted
    (headers, body), *more = await receiver.wait_calls(1)
    answer = json.loads(body)
    assert answer["metadata"]["request_id"] == accepted.request_id
    transcript = answer["results"]["channels"][0]["alternatives"][0]["transcript"]
    assert wer(entry["text"], transcript) <= 0.15, transcript
    secret = key_secret(SECRET, fingerprint(KEY))
    assert verify(secret, body, headers["X-Asrhub-Signature"])
    assert not verify(key_secret(SECRET, fingerprint(OTHER_KEY)), body, headers["X-Asrhub-Signature"])
    assert headers["Idempotency-Key"] == headers["X-Asrhub-Job-Id"] == accepted.request_id
    done = await settled(server, accepted.request_id)
    assert done["status"] == "done" and done["attempts"] == 1, done
    assert not more and receiver.methods == ["PUT"]
    status, _ = await job_status(server, accepted.request_id, key=OTHER_KEY)
    assert status == 404  # only the key that created it


async def test_transcribe_callback_is_retried_after_a_500(server: ServerThread, receiver: Receiver) -> None:
    receiver.fail_first = True
    form = aiohttp.FormData()
    form.add_field("file", fixture("quick_fox.wav").read_bytes(), filename="fox.wav")
    form.add_field("callback_url", receiver.url)
    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.post(f"{server.http}/v1/transcribe", data=form) as resp:
            assert resp.status == 202
            accepted = await resp.json()
        async with http.post(
            f"{server.http}/v1/transcribe", data=fixture("quick_fox.wav").read_bytes()
        ) as resp:
            synchronous = await resp.json()
    calls = await receiver.wait_calls(2)
    assert [h["X-Asrhub-Attempt"] for h, _ in calls] == ["1", "2"]
    assert calls[0][1] == calls[1][1]  # the same signed body again
    answer = json.loads(calls[1][1])
    assert set(answer) == set(synchronous) and answer["text"] == synchronous["text"]
    done = await settled(server, accepted["job_id"])
    assert done["status"] == "done" and done["attempts"] == 2, done


async def test_a_full_queue_is_capacity_in_each_shape(server: ServerThread, receiver: Receiver) -> None:
    receiver.hold = asyncio.Event()
    audio = fixture("quick_fox.wav").read_bytes()
    async with aiohttp.ClientSession(headers=AUTH) as http:
        first = []
        for _ in range(2):  # one delivering (held by the receiver), one waiting
            async with http.post(f"{server.http}/v1/listen?callback={receiver.url}", data=audio) as resp:
                assert resp.status == 202, await resp.text()
                first.append((await resp.json())["request_id"])
        async with http.post(f"{server.http}/v1/listen?callback={receiver.url}", data=audio) as resp:
            assert resp.status == 429 and (await resp.json())["err_code"]
        form = aiohttp.FormData()
        form.add_field("file", audio, filename="fox.wav")
        form.add_field("callback_url", receiver.url)
        async with http.post(f"{server.http}/v1/transcribe", data=form) as resp:
            assert resp.status == 503 and (await resp.json())["code"] == "capacity"
    receiver.hold.set()
    for job_id in first:
        assert (await settled(server, job_id))["status"] == "done"


async def test_loopback_targets_are_refused_unless_allowed(server: ServerThread) -> None:
    async with httpx.AsyncClient(timeout=WAIT) as http:
        with pytest.raises(ApiError) as refused:
            await client_for(server, http=http).listen.v1.media.transcribe_file(
                request=fixture("quick_fox.wav").read_bytes(), callback="http://127.0.0.2:9/hook"
            )
    assert refused.value.status_code == 400 and "public" in json.dumps(refused.value.body)
    for url in (
        "http://localhost:9/",  # a name that resolves to 127.0.0.1
        "http://10.1.2.3/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://169.254.169.254/",  # link-local: cloud metadata
        "http://0.0.0.0/",
        "http://224.0.0.1/",  # multicast
        "http://100.64.0.1/",  # shared address space
        "http://user:pw@93.184.216.34/",  # user info
        "ftp://93.184.216.34/",
        "http://" + "a" * 3000 + ".com/",
    ):
        with pytest.raises(HubError):
            await check_target(url, Allow(()))
    await check_target("http://93.184.216.34:8443/hook", Allow(()))  # a public address literal
    await check_target("http://localhost:9/", Allow(("localhost",)))
    await check_target("http://127.0.0.5:9/", Allow(("127.0.0.0/8",)))


async def test_delivery_checks_the_address_it_connects_to(receiver: Receiver) -> None:
    """A name accepted earlier that now resolves to loopback: the POST is never made."""
    port = receiver.url.split(":")[2].split("/")[0]
    deliverer = Deliverer(JobsSettings(callback_secret=SECRET))
    attempts_made = 0

    async def begin() -> int:
        nonlocal attempts_made
        attempts_made += 1
        return attempts_made

    try:
        ok, attempts, outcome = await deliverer.deliver(
            "job-1", Callback(f"http://localhost:{port}/hook", "POST", "s"), b"{}", begin
        )
    finally:
        await deliverer.close()
    assert not ok and attempts == 1 and "not a public address" in outcome
    assert receiver.calls == []


async def test_a_full_upload_line_delays_a_job_rather_than_failing_it(receiver: Receiver) -> None:
    """One upload at a time and no wait in line: of two jobs run at once one meets ``capacity``
    and is tried again after a backoff, so both callbacks carry a transcript (before the retry,
    one carried the ``capacity`` error)."""
    jobs = msgspec.structs.replace(
        JOBS, concurrency=2, max_queued=4, max_attempts=30, retry_base_s=0.5, retry_max_s=2.0
    )
    settings = make_settings(jobs=jobs, limits={"max_uploads": 1, "upload_wait_s": 0.0})
    form = aiohttp.FormData()
    audio = fixture("quick_fox.wav").read_bytes()
    with ServerThread(settings) as hub:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            ids = []
            for _ in range(3):
                form = aiohttp.FormData()
                form.add_field("file", audio, filename="fox.wav")
                form.add_field("callback_url", receiver.url)
                async with http.post(f"{hub.http}/v1/transcribe", data=form) as resp:
                    assert resp.status == 202, await resp.text()
                    ids.append((await resp.json())["job_id"])
        calls = await receiver.wait_calls(3)
        for job_id in ids:
            status = await settled(hub, job_id)
            assert status["status"] == "done", status["error"]
    answers = [json.loads(body) for _, body in calls]
    assert all("fox" in a.get("text", "").lower() for a in answers), answers
