"""Whisper replicas on a Ray cluster (``[providers.whisper] ray_address``).

The model runs in Ray core actors (``WhisperReplica``), ``ray_replicas`` of them, placed by Ray
with the ``SPREAD`` strategy over the cluster's nodes, each reserving ``ray_num_cpus`` CPUs (and
one GPU when ``device = "cuda"``). An actor has two threads: one lane for final/upload batches,
one for partial batches (CTranslate2 ``num_workers = 2``), so the hub's lane rules hold inside
each replica too. Ray core actors, not Ray Serve: a call costs about a millisecond and nothing
else runs on the head (Serve's proxy and controller are heavy on a 2-core machine).

The hub process (a Ray driver) sends each batch to the **least-loaded** replica: the fewest
calls this process has in flight on it, partial lanes counted apart. When a replica or its node
dies mid-call (``RayActorError`` and kin) the batch is sent to the next replica at once, so no
final is lost; the failed replica is left out until a probe call answers again (Ray restarts it,
``max_restarts = -1``, on any node with room). When no replica is left the call raises
:class:`~asrhub.plugin.ProviderError`, and the usual failover / ``provider_failed`` follows.
An error *inside* the engine (a bad clip) is not retried elsewhere: it is the clip's error.

Several hub processes share one cluster: each starts its own replicas, or, with ``ray_name``
set, they all use the same named, detached replicas ``NAME-0 … NAME-(n-1)`` (created by the first
hub to start, found by the others).

Ray workers import this module and ``asrhub`` itself: install asrhub (``pip install
asrhub[ray]``) on every node, and make the model path exist on every node.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

from asrhub.plugin import ProviderError, ProviderUnavailable, Transcription

from .whisper_decode import WhisperDecoder
from .whisper_model import Clip, WhisperSettings, check, decode_clips, load_model

NAMESPACE = "asrhub"
READY_TIMEOUT_S = 120.0


class WhisperReplica:
    """The actor's body: one faster-whisper model on one node."""

    def __init__(self, options: dict[str, Any]) -> None:
        settings = msgspec.convert(options, WhisperSettings)
        problem = check(options)
        if problem is not None:
            raise ProviderUnavailable(f"whisper replica: {problem}")
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        self.model = load_model(settings)
        self.decoder = WhisperDecoder(self.model, settings)

    def decode(self, clips: list[Clip], final: bool) -> list[Transcription]:
        return decode_clips(self.decoder, clips, final)

    def languages(self) -> tuple[str, ...] | None:
        return None if self.model.model.is_multilingual else ("en",)

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())


@dataclass(eq=False)
class _Replica:
    name: str
    handle: Any
    finals: int = 0
    partials: int = 0
    up: bool = True
    probe: asyncio.Task[None] | None = field(default=None, repr=False)


class RayReplicas:
    """The hub's side: replica handles, least-loaded choice, retry on a replica that died."""

    def __init__(self, settings: WhisperSettings, replicas: list[_Replica]) -> None:
        self.settings = settings
        self.replicas = replicas
        self.final_lanes = self.partial_lanes = len(replicas)
        self.retries = 0
        self._languages: tuple[str, ...] | None = None
        """Batches re-sent because their replica died mid-call."""

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
            ).remote(options)
            replicas.append(_Replica(name or f"replica-{i}", handle))
        self = cls(settings, replicas)
        ready = await asyncio.gather(
            *(asyncio.wait_for(_await(r.handle.languages.remote()), READY_TIMEOUT_S) for r in replicas),
            return_exceptions=True,
        )
        for r, answer in zip(replicas, ready, strict=True):
            if isinstance(answer, BaseException):
                r.up = False
                self._watch(r)
        if all(isinstance(a, BaseException) for a in ready):
            raise ProviderUnavailable(f"whisper: no replica started on the Ray cluster: {ready[0]!r}")
        self._languages = next(a for a in ready if not isinstance(a, BaseException))
        return self

    async def languages(self) -> tuple[str, ...] | None:
        return self._languages

    async def run(self, clips: list[Clip], partial: bool) -> list[Transcription]:
        """One batch on the least-loaded live replica; re-sent elsewhere if that replica dies."""
        import ray.exceptions as rx

        tried: set[int] = set()
        while True:
            replica = self._least_loaded(partial, tried)
            if replica is None:
                raise ProviderError("whisper: no replica left on the Ray cluster")
            tried.add(id(replica))
            if partial:
                replica.partials += 1
            else:
                replica.finals += 1
            try:
                return await _await(replica.handle.decode.remote(clips, not partial))  # type: ignore[no-any-return]
            except rx.RayTaskError as exc:  # the engine itself failed on this batch
                raise ProviderError(f"whisper replica {replica.name}: {exc.cause!r}") from None
            except (rx.RayActorError, rx.ActorUnavailableError, rx.WorkerCrashedError, rx.NodeDiedError):
                self.retries += 1
                replica.up = False
                self._watch(replica)
            finally:
                if partial:
                    replica.partials -= 1
                else:
                    replica.finals -= 1

    def _least_loaded(self, partial: bool, tried: set[int]) -> _Replica | None:
        live = [r for r in self.replicas if r.up and id(r) not in tried]
        if not live:
            return None
        if partial:
            return min(live, key=lambda r: (r.partials, r.finals))
        return min(live, key=lambda r: (r.finals, r.partials))

    def _watch(self, replica: _Replica) -> None:
        """Probe a failed replica until Ray has it back (restarted here or on another node)."""
        if replica.probe is not None and not replica.probe.done():
            return

        async def probe() -> None:
            while not replica.up:
                try:
                    await asyncio.wait_for(_await(replica.handle.languages.remote()), READY_TIMEOUT_S)
                except Exception:  # still restarting, or gone for good
                    await asyncio.sleep(1.0)
                else:
                    replica.up = True

        replica.probe = asyncio.get_running_loop().create_task(probe())

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
