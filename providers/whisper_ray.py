"""Whisper replicas on a Ray cluster (``[providers.whisper] ray_address``).

The model runs in Ray core actors (``WhisperReplica``), ``ray_replicas`` of them, placed by Ray
with the ``SPREAD`` strategy over the cluster's nodes, each reserving ``ray_num_cpus`` CPUs (and
one GPU when ``device = "cuda"``). An actor has two threads: one lane for final/upload batches,
one for partial batches (CTranslate2 ``num_workers = 2``), so the hub's lane rules hold inside
each replica too. Ray core actors, not Ray Serve: a call costs about a millisecond and nothing
else runs on the head (Serve's proxy and controller are heavy on a 2-core machine).

The hub process (a Ray driver) sends each batch to the **least-loaded** replica: the fewest
calls this process has in flight on it, partial lanes counted apart — counted until Ray says the
call ended (answered, failed, or its actor died), not until this process stopped waiting, so a
replica still busy with an abandoned call does not look idle. A replica is ``up``, ``suspect``
or ``down``; only an ``up`` one gets calls:

* a replica or its node dies mid-call (``RayActorError`` and kin): ``down``; the batch goes to
  the next replica at once, so no final is lost;
* a call outlives ``ray_call_timeout_s`` (per started 30 s of audio in the batch): the replica
  is ``suspect`` (hung, or far slower than it should be); the batch goes to the next replica;
  the call is left to finish (Ray cannot interrupt a running actor thread) and still counts;
* a background probe brings it back: once every call this process has in flight on it has
  ended, a ``languages()`` call that answers makes it ``up`` again (a dead one is restarted by
  Ray, ``max_restarts = -1``, on any node with room, and the probe waits for it).

::

    replica H:  batch 1 ─────────── (hangs) ──────────────────────── ends ─ probe ✓ ─ up ─ batch 7
    replica G:  batch 2 ─ batch 3 ─ batch 1 (re-sent) ─ batch 4 ─ batch 5 ─ batch 6 ─
    H state:    up ────── timeout ▶ suspect (no new calls) ─────────────────────────▶ up

When no replica is up the call raises :class:`~asrhub.plugin.ProviderError` naming each one's
state, and the usual failover / ``provider_failed`` follows. An error *inside* the engine (a bad
clip) is not retried elsewhere: it is the clip's error.

Several hub processes share one cluster: each starts its own replicas, or, with ``ray_name``
set, they all use the same named, detached replicas ``NAME-0 … NAME-(n-1)`` (created by the first
hub to start, found by the others).

When the hub traces (``[telemetry]``), each replica traces too, to the same collector: a clip
carries its engine call's trace context (``Clip.trace``), and the replica's ``whisper.replica``
span is that call's child.

Ray workers import this module and ``asrhub`` itself: install asrhub (``pip install
asrhub[ray]``) on every node, and make the model path exist on every node.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import msgspec

from asrhub.engine.failover import call_timeout
from asrhub.frames import TARGET_RATE
from asrhub.logging import get_logger
from asrhub.plugin import ProviderError, ProviderUnavailable, Transcription
from asrhub.settings.schema import TelemetrySettings
from asrhub.telemetry import install, installed, remote_spans

from .whisper_decode import WhisperDecoder
from .whisper_model import Clip, WhisperSettings, check, decode_clips, load_model

log = get_logger("asrhub.providers.whisper_ray")

NAMESPACE = "asrhub"
READY_TIMEOUT_S = 120.0
"""How long a probe (or the start) waits for a replica to answer: a restarting replica loads
its model first."""
PROBE_EVERY_S = 1.0
"""Pause between two probes of a replica that did not answer."""
UP, SUSPECT, DOWN = "up", "suspect", "down"


class WhisperReplica:
    """The actor's body: one faster-whisper model on one node."""

    def __init__(self, options: dict[str, Any], telemetry: TelemetrySettings | None = None) -> None:
        if telemetry is not None:  # the hub traces: so does its replica, to the same collector
            install(telemetry, service_suffix="-ray-replica")
        settings = msgspec.convert(options, WhisperSettings)
        problem = check(options)
        if problem is not None:
            raise ProviderUnavailable(f"whisper replica: {problem}")
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        self.model = load_model(settings)
        self.decoder = WhisperDecoder(self.model, settings)

    def decode(self, clips: list[Clip], final: bool) -> list[Transcription]:
        attributes = {"asrhub.batch": len(clips), "asrhub.pid": os.getpid()}
        with remote_spans("whisper.replica", (clip.trace for clip in clips), attributes):
            return decode_clips(self.decoder, clips, final)

    def languages(self) -> tuple[str, ...] | None:
        return None if self.model.model.is_multilingual else ("en",)

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def pid(self) -> int:
        """The replica's process on its node (for an operator: ``py-spy dump --pid``)."""
        return os.getpid()


@dataclass(eq=False)
class _Replica:
    name: str
    handle: Any
    finals: int = 0
    """Final/upload calls this process has in flight on it, until Ray says each one ended."""
    partials: int = 0
    state: str = UP
    """``up`` (gets calls), ``suspect`` (a call timed out) or ``down`` (it died): see above."""
    why: str = ""
    """Why it is not up (for the ``no replica left`` error and the log)."""
    calls: int = 0
    """Calls sent to it by this process."""
    drained: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    """Set while no call of this process is in flight on it."""
    probe: asyncio.Task[None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.drained.set()

    @property
    def up(self) -> bool:
        return self.state == UP

    @property
    def in_flight(self) -> int:
        return self.finals + self.partials


class RayReplicas:
    """The hub's side: replica handles, least-loaded choice, re-send on a replica that died or
    hung, suspect replicas probed back."""

    def __init__(self, settings: WhisperSettings, replicas: list[_Replica]) -> None:
        self.settings = settings
        self.replicas = replicas
        self.final_lanes = self.partial_lanes = len(replicas)
        self.call_timeout_s = settings.ray_call_timeout_s
        """A call's time limit per started 30 s of audio in its batch (0: none)."""
        self.retries = 0
        """Batches re-sent because their replica died mid-call."""
        self.timeouts = 0
        """Batches re-sent because their replica did not answer within the call's time limit."""
        self._languages: tuple[str, ...] | None = None

    @classmethod
    async def connect(cls, settings: WhisperSettings) -> RayReplicas:
        try:
            import ray
        except ImportError:
            raise ProviderUnavailable(
                "whisper: ray_address is set but Ray is not installed: pip install asrhub[ray]"
            ) from None
        if not ray.is_initialized():
            await asyncio.to_thread(
                ray.init,
                address=settings.ray_address,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        options = msgspec.to_builtins(settings)
        options.update(ray_address="", workers=1, partial_workers=1)  # the replica is in-process
        if not settings.cpu_threads:  # decode on the CPUs Ray reserved for the replica, no more
            options["cpu_threads"] = max(1, round(settings.ray_num_cpus))
        gpus = 1 if settings.device == "cuda" else 0
        actor = ray.remote(WhisperReplica)
        replicas = []
        for i in range(max(1, settings.ray_replicas)):
            name = f"{settings.ray_name}-{i}" if settings.ray_name else ""
            named: dict[str, Any] = (
                {"name": name, "get_if_exists": True, "lifetime": "detached"} if name else {}
            )
            handle = actor.options(  # type: ignore[attr-defined]
                namespace=NAMESPACE,
                num_cpus=settings.ray_num_cpus,
                num_gpus=gpus,
                max_concurrency=2,
                max_restarts=-1,
                max_task_retries=0,
                scheduling_strategy="SPREAD",
                **named,
            ).remote(options, installed())
            replicas.append(_Replica(name or f"replica-{i}", handle))
        self = cls(settings, replicas)
        ready = await asyncio.gather(
            *(asyncio.wait_for(_await(r.handle.languages.remote()), READY_TIMEOUT_S) for r in replicas),
            return_exceptions=True,
        )
        for r, answer in zip(replicas, ready, strict=True):
            if isinstance(answer, BaseException):
                self._leave_out(r, DOWN, f"did not start: {answer!r:.200}")
        if all(isinstance(a, BaseException) for a in ready):
            raise ProviderUnavailable(f"whisper: no replica started on the Ray cluster: {ready[0]!r}")
        self._languages = next(a for a in ready if not isinstance(a, BaseException))
        return self

    async def languages(self) -> tuple[str, ...] | None:
        return self._languages

    def timeout_for(self, clips: list[Clip]) -> float | None:
        """The time one call on ``clips`` may take (None: no limit)."""
        if self.call_timeout_s <= 0:
            return None
        seconds = sum(len(clip.samples) for clip in clips) / TARGET_RATE
        return call_timeout(self.call_timeout_s, seconds)

    async def run(self, clips: list[Clip], partial: bool) -> list[Transcription]:
        """One batch on the least-loaded replica that is up; re-sent elsewhere if that replica
        dies or does not answer in time."""
        import ray.exceptions as rx

        timeout = self.timeout_for(clips)
        tried: set[int] = set()
        while True:
            replica = self._least_loaded(partial, tried)
            if replica is None:
                raise ProviderError(f"whisper: no replica left on the Ray cluster ({self.describe()})")
            tried.add(id(replica))
            call = self._send(replica, clips, partial)
            try:
                # shielded: a caller that gives up leaves the call running, and counted
                return await asyncio.wait_for(asyncio.shield(call), timeout)  # type: ignore[no-any-return]
            except TimeoutError:
                self.timeouts += 1
                self._leave_out(replica, SUSPECT, f"a call did not answer within {timeout:g} s")
            except rx.RayTaskError as exc:  # the engine itself failed on this batch
                raise ProviderError(f"whisper replica {replica.name}: {exc.cause!r}") from None
            except (rx.RayActorError, rx.ActorUnavailableError, rx.WorkerCrashedError, rx.NodeDiedError) as e:
                self.retries += 1
                self._leave_out(replica, DOWN, f"died mid-call: {type(e).__name__}")

    def _send(self, replica: _Replica, clips: list[Clip], partial: bool) -> asyncio.Future[Any]:
        """Start one call on ``replica``; it counts as in flight there until Ray ends it."""
        call = asyncio.wrap_future(replica.handle.decode.remote(clips, not partial).future())
        replica.calls += 1
        if partial:
            replica.partials += 1
        else:
            replica.finals += 1
        replica.drained.clear()

        def ended(done: asyncio.Future[Any]) -> None:
            if partial:
                replica.partials -= 1
            else:
                replica.finals -= 1
            if replica.in_flight <= 0:
                replica.drained.set()
            if not done.cancelled():
                done.exception()  # retrieved: nobody may be waiting for it any more

        call.add_done_callback(ended)
        return call

    def _least_loaded(self, partial: bool, tried: set[int]) -> _Replica | None:
        live = [r for r in self.replicas if r.state == UP and id(r) not in tried]
        if not live:
            return None
        if partial:
            return min(live, key=lambda r: (r.partials, r.finals))
        return min(live, key=lambda r: (r.finals, r.partials))

    def describe(self) -> str:
        return "; ".join(f"{r.name}: {r.state}" + (f", {r.why}" if r.why else "") for r in self.replicas)

    def _leave_out(self, replica: _Replica, state: str, why: str) -> None:
        """No new calls for ``replica`` until a probe brings it back."""
        if replica.state != DOWN or state == DOWN:
            replica.state, replica.why = state, why
        log.warning("ray replica left out", replica=replica.name, state=replica.state, reason=why)
        self._probe(replica)

    def _probe(self, replica: _Replica) -> None:
        """Once this process has no call left in flight on ``replica``, call it until it
        answers (Ray may be restarting it, here or on another node), then take it back."""
        if replica.probe is not None and not replica.probe.done():
            return

        async def probe() -> None:
            while replica.state != UP:
                await replica.drained.wait()
                try:
                    await asyncio.wait_for(_await(replica.handle.languages.remote()), READY_TIMEOUT_S)
                except Exception:  # still restarting, hung again, or gone for good
                    await asyncio.sleep(PROBE_EVERY_S)
                else:
                    log.info("ray replica back", replica=replica.name, was=replica.state, reason=replica.why)
                    replica.state, replica.why = UP, ""

        name = f"asrhub-ray-probe-{replica.name}"
        replica.probe = asyncio.get_running_loop().create_task(probe(), name=name)

    def nodes(self) -> list[str]:
        import ray

        return [ray.get(r.handle.node.remote()) for r in self.replicas if r.up]

    async def close(self) -> None:
        import ray

        for r in self.replicas:
            if r.probe is not None:
                r.probe.cancel()
            if not self.settings.ray_name:  # shared replicas outlive this hub
                ray.kill(r.handle)


async def _await(ref: Any) -> Any:
    return await ref
