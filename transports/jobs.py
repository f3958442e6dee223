"""Jobs that call back, over HTTP: accepting a job (Deepgram ``callback``, ``/v1/transcribe``
``callback_url``), its status (``GET /v1/jobs/ID``, only to the key that created it), and the
node's :class:`~asrhub.jobs.queue.JobQueue` for the application's lifetime.

Each protocol registers a runner (:func:`register_runner`): it transcribes a job from its saved
options and upload and returns the body the synchronous request would have answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from asrhub.errors import HubError
from asrhub.hub import Hub
from asrhub.jobs.delivery import Callback, backoff
from asrhub.jobs.queue import Job, JobQueue, Jobs
from asrhub.jobs.redis_jobs import RedisJobs
from asrhub.jobs.signing import key_secret
from asrhub.jobs.targets import Allow, check_target
from asrhub.protocol import encode_json

from .common import HUB, KEY_ID, SETTINGS, HTTPHubError
from .worker_routes import PEERS

JobRunner = Callable[[Hub, Job, bool], Awaitable[tuple[bytes, str | None]]]
"""``runner(hub, job, last)``: the callback body and error; unless ``last`` it raises a
``capacity`` HubError (a full upload line or engine) for the job to be tried again later."""
RUNNERS = web.AppKey("job_runners", dict[str, JobRunner])
JOBS = web.AppKey("jobs", Jobs)
METHODS = ("POST", "PUT")


def register_runner(app: web.Application, kind: str, runner: JobRunner) -> None:
    app.setdefault(RUNNERS, {})[kind] = runner


async def accept(
    request: web.Request,
    kind: str,
    params: dict[str, list[str]],
    data: bytes,
    url: str,
    method: str | None,
    *,
    job_id: str | None = None,
) -> Job:
    """Check the callback and admit the job (``bad_message``: a refused URL or method, no
    ``jobs.callback_secret``; ``capacity``: the queue is full)."""
    settings = request.app[SETTINGS].jobs
    method = (method or "POST").upper()
    if method not in METHODS:
        raise HubError("bad_message", f"callback_method={method!r}: expected POST or PUT")
    if not settings.callback_secret:
        raise HubError("bad_message", "this hub does not call back (jobs.callback_secret is not set)")
    await check_target(url, Allow(settings.callback_allow))
    key_id = request.get(KEY_ID)
    callback = Callback(url=url, method=method, secret=key_secret(settings.callback_secret, key_id))
    job = Job(kind=kind, params=params, data=data, callback=callback, key_id=key_id)
    if job_id is not None:
        job.id = job_id
    peers = request.app.get(PEERS)
    if peers is not None and request.app[HUB].cluster is None:  # its status is in this worker
        job.id = peers.tagged(job.id)
    return await request.app[JOBS].submit(job)


async def status(request: web.Request) -> web.Response:
    found = await request.app[JOBS].status(request.match_info["job_id"], request.get(KEY_ID))
    if found is None:
        raise HTTPHubError("bad_message", "no such job", status=404)
    return web.Response(body=encode_json(found), content_type="application/json")


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    app[JOBS].start()
    yield
    await app[JOBS].close()


def setup(app: web.Application) -> None:
    """After the transports that register runners."""

    async def run(job: Job) -> tuple[bytes, str | None]:
        """A job that meets a full upload line or engine waits and is tried again (the
        delivery's backoff and ``jobs.max_attempts``) rather than calling back ``capacity``."""
        settings = app[SETTINGS].jobs
        runner = app[RUNNERS][job.kind]
        tries = 0
        while True:
            tries += 1
            try:
                return await runner(app[HUB], job, tries >= settings.max_attempts)
            except HubError as exc:
                if exc.code != "capacity" or tries >= settings.max_attempts:
                    raise
            await asyncio.sleep(backoff(tries, settings))

    app.setdefault(RUNNERS, {})
    cluster = app[HUB].cluster
    if cluster is None:
        app[JOBS] = JobQueue(app[SETTINGS].jobs, run)
    else:  # jobs live in Redis: any node runs them, a dead node's are run again
        app[JOBS] = RedisJobs(cluster, app[SETTINGS].jobs, run)
    app.cleanup_ctx.append(_lifetime)
    app.router.add_get("/v1/jobs/{job_id}", status)
