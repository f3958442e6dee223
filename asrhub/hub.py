"""The hub: providers, limits and the live sessions of one process.

``open`` is synchronous on purpose: checking capacity, allocating the id and registering the
session happen with no ``await`` in between, so two concurrent opens can never both pass a
capacity check that only one of them should pass (the old system's check-then-act race).

With a cluster (``[cluster] redis_url``, :mod:`asrhub.cluster.leases`) the limits hold across every
node: :meth:`Hub.open_async` first takes a lease in Redis (one atomic script: count, refuse or
add), then opens synchronously as above; the lease goes when the session closes. Without a
cluster ``open_async`` is ``open``. A transport that calls ``open`` directly still has its
sessions counted cluster-wide (their leases are added unchecked).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import msgspec

from asrhub.config import (
    MAX_SPEAKERS,
    Limits,
    SessionConfig,
    VadEngine,
    base_language,
    parse_session_config,
    updated_config,
)
from asrhub.diarize.assign import attribute
from asrhub.diarize.diarizer import Turn
from asrhub.diarize.models import SpeakerModels
from asrhub.diarize.tracker import SpeakerMemory
from asrhub.engine.breaker import Breakers
from asrhub.engine.failover import AllFailed, call_timeout, failover
from asrhub.engine.uploads import JOB_S, Progress, UploadGate, jobs, merge
from asrhub.errors import HubError
from asrhub.flow import Pending, Slots
from asrhub.frames import TARGET_RATE, Samples
from asrhub.logging import get_logger
from asrhub.metrics.hub import HubMetrics, HubReading, Pooled
from asrhub.plugin import Operator, Priority, Provider, Transcription
from asrhub.routing import AUTO
from asrhub.routing.router import Router
from asrhub.routing.stats import EngineStats
from asrhub.session.context import Context, PipelineFactory, Tracing
from asrhub.session.resume import Resumes
from asrhub.session.session import Session
from asrhub.telemetry import end_session, session_span
from asrhub.usage import CALLER, UsageMeter

if TYPE_CHECKING:
    from asrhub.cluster.leases import Cluster
    from asrhub.cluster.resume import ClusterResumes

NO_PROVIDER = "none"
"""Provider name that runs the pipeline for VAD / wake-word events only."""

log = get_logger("asrhub.hub")


class OpenOptions(TypedDict, total=False):
    """How :meth:`Hub.open` / :meth:`Hub.open_async` open a session, besides its config."""

    key: str | None
    """The API key its per-key limit counts against (None: no key)."""
    transport: str
    """The transport's name, a label of its metrics and logs (default ``inproc``)."""
    session_id: str | None
    """A fixed id (a resumed session); a fresh random one when absent."""
    continuation: Operator | None
    """An operator applied to the session's output (a session resumed from the cluster log
    continues its segment ids and stream times)."""
    speakers: SpeakerMemory | None
    """The live speaker labels' state a session resumed from the cluster log starts from."""


class Hub:
    def __init__(
        self,
        *,
        providers: Mapping[str, Provider],
        pipeline_factory: PipelineFactory,
        default_provider: str = NO_PROVIDER,
        limits: Limits | None = None,
        cluster: Cluster | None = None,
        metrics: HubMetrics | None = None,
        vad_engine: VadEngine = "webrtc",
        speakers: SpeakerModels | None = None,
    ) -> None:
        self.providers = dict(providers)
        self.speakers = speakers or SpeakerModels()
        """The speaker model (diarization), loaded on first use (see :mod:`asrhub.diarize`)."""
        self.default_provider = default_provider
        self.vad_engine: VadEngine = vad_engine
        """The VAD engine of sessions whose config names none."""
        self.limits = limits or Limits()
        self.pipeline_factory = pipeline_factory
        self.sessions: dict[str, Session] = {}
        self._per_key: Counter[str] = Counter()
        self._key_of: dict[str, str] = {}
        self.accepting = True
        self._stopping: asyncio.Future[None] | None = None
        self.opened_total = 0
        self.resumes = Resumes(self.limits.resume_window_s)
        """Sessions a dropped client may resume (see :mod:`asrhub.session.resume`)."""
        self.cluster = cluster
        self.cluster_resumes: ClusterResumes | None = None
        """Resume anywhere (see :mod:`asrhub.cluster.resume`); None without a cluster."""
        if cluster is not None:
            from asrhub.cluster.resume import ClusterResumes

            self.cluster_resumes = ClusterResumes(cluster, self.resumes, self.limits.resume_window_s)
        threads = self.limits.max_decoder_threads
        self.decoder_slots = Slots(threads, per_key=max(1, int(self.limits.decoder_key_share * threads)))
        """Compressed-audio decoder threads running, all sessions together (a share per key)."""
        self.uploads = UploadGate(self.limits.max_uploads, self.limits.upload_wait_s)
        """Uploads decoded and transcribed at once (see :class:`asrhub.engine.uploads.UploadGate`)."""
        self.tracing: Tracing | None = None
        """Session traces (:mod:`asrhub.trace`; the composition root sets it from ``[trace]``);
        None: nothing is recorded and ``"trace": true`` is refused."""
        self.warmups: list[Callable[[], object]] = []
        """Blocking loads ``start`` runs off the loop (the composition root adds them)."""
        self.preparations: list[Callable[[SessionConfig], Callable[[], object] | None]] = []
        """What a session's config needs loaded before its chain is built, and only then (the
        composition root adds them: the wake-word models it names, the resampler's filter
        library). Each returns the blocking load still to do (None: nothing); ``open_async``
        runs it off the loop. ``open`` builds the chain at once (its stages load inline)."""
        self.breakers = Breakers(
            failures_to_open=self.limits.breaker_failures,
            window_s=self.limits.breaker_window_s,
            probe_timeout_s=self.limits.provider_timeout_s,
        )
        """One circuit breaker per provider, shared by every session and ``transcribe``."""
        self.stats = EngineStats()
        """Live figures per engine (time per audio second, calls in flight), fed by every call."""
        self.router: Router | None = None
        """Routes ``provider: "auto"`` (:mod:`asrhub.routing`); None: "auto" is refused. The
        composition root builds it on this hub's breakers and figures."""
        self.metrics = metrics if metrics is not None else HubMetrics()
        """This hub's metrics and their registry (``/metrics``); see :mod:`asrhub.metrics.hub`."""
        self.metrics.read_from(self.reading)
        store = None
        if cluster is not None:
            from asrhub.cluster.usage import RedisUsage

            store = RedisUsage(cluster)
        self.usage = UsageMeter(self.limits, self.metrics, store=store)
        """Usage per API key and its quotas (see :mod:`asrhub.usage`; ``GET /v1/usage``)."""

    def reading(self) -> HubReading:
        """What a scrape of this hub's metrics reads now (handed to them as a callback)."""
        slots, uploads = self.decoder_slots, self.uploads
        reading = HubReading(
            resumable=len(self.resumes),
            detached=self.resumes.detached,
            decoders_running=slots.size - slots.free,
            decoders_waiting=slots.waiting,
            uploads_running=uploads.busy,
            uploads_waiting=uploads.waiting,
        )
        for session in list(self.sessions.values()):
            transport = session.ctx.transport
            reading.sessions[transport] = reading.sessions.get(transport, 0) + 1
            reading.subscriptions += session.subscribers
        for provider in list(self.providers.values()):
            if isinstance(provider, Pooled):
                reading.pools += provider.pools()
        return reading

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load every provider's model (and run ``warmups``, e.g. the wake-word models) before
        the first session is accepted."""
        for provider in self.providers.values():
            await provider.start()
        for warmup in self.warmups:
            await asyncio.to_thread(warmup)
        if self.cluster is not None:
            await self.cluster.start()
        self.usage.start()

    async def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop accepting; hand every resumable session another node can continue over to it
        (with a cluster, see :meth:`hand_over`); flush every other open session to its final
        transcripts; release engines. Returns once the flushes are done and every session
        handed over was claimed elsewhere, or after ``grace_s``.

        Idempotent: a later call waits for the first one (whose ``grace_s`` holds)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown(grace_s))
        await asyncio.shield(self._stopping)

    @property
    def can_hand_over(self) -> bool:
        """Whether a draining hub hands its resumable sessions over: a cluster that Redis
        answers for (their records there let any node continue them)."""
        return self.cluster_resumes is not None and self.cluster is not None and self.cluster.available

    def hand_over(self) -> list[Session]:
        """A rolling restart loses nothing: each resumable session with a cluster record is
        kept open here, its utterance in flight not finalized, and its client told to resume
        on another node (:meth:`asrhub.session.resume.Resumes.hand_over`); this node lets it go
        the moment another one claims it. Returns those sessions (none without a cluster)."""
        if not self.can_hand_over:
            return []
        moved = [held.session for held in self.resumes.hand_over()]
        if moved:
            log.info("draining: sessions handed over to the cluster", sessions=len(moved))
        return moved

    async def _shutdown(self, grace_s: float) -> None:
        self.accepting = False
        sessions = list(self.sessions.values())
        moved = self.hand_over()
        waits: list[asyncio.Future[object]] = [
            asyncio.ensure_future(s.end()) for s in sessions if s not in moved
        ]
        if moved:
            waits.append(asyncio.ensure_future(self.resumes.wait_moved()))
        if waits:
            _done, late = await asyncio.wait(waits, timeout=grace_s)
            for waiter in late:
                waiter.cancel()
            unclaimed = self.resumes.moving
            if late:
                log.warning(
                    "shutdown grace over: closing what is left",
                    grace_s=grace_s,
                    flushes_late=len(late) - (1 if unclaimed else 0),
                    handed_over_unclaimed=unclaimed,
                )
        self.resumes.let_go()
        for session in sessions:
            session.close("shutdown")
        self.resumes.clear()
        await self.usage.stop()
        if self.tracing is not None:
            await self.tracing.close()  # the traces of the sessions just closed are stored
        if self.cluster is not None:
            await self.cluster.stop()
        await self.breakers.close()
        for provider in self.providers.values():
            await provider.close()

    # ------------------------------------------------------------------ sessions

    def resolve_config(self, config: SessionConfig | Mapping[str, Any] | None) -> SessionConfig:
        """Validate a client's config and fill in the hub's defaults."""
        if not isinstance(config, SessionConfig):
            try:
                config = parse_session_config(config)
            except msgspec.ValidationError as exc:
                raise HubError("bad_message", f"invalid session config: {exc}") from None
        if config.provider is None:
            config = msgspec.structs.replace(config, provider=self.default_provider)
        if config.vad.engine is None:
            config = msgspec.structs.replace(
                config, vad=msgspec.structs.replace(config.vad, engine=self.vad_engine)
            )
        if AUTO in config.providers:
            self._check_auto(config)
        for name in config.providers:
            if name not in (NO_PROVIDER, AUTO) and name not in self.providers:
                known = ", ".join(sorted([*self.providers, NO_PROVIDER]))
                raise HubError("unknown_provider", f"unknown provider {name!r}; this hub has: {known}")
        if NO_PROVIDER in config.providers and len(config.providers) > 1:
            raise HubError("bad_message", "provider 'none' cannot be part of a failover list")
        if config.turn_detection is None:
            config = msgspec.structs.replace(config, turn_detection=self.limits.default_turn)
        turn = config.turn_detection
        if turn is not None and turn.semantic and not self.limits.semantic_turns:
            raise HubError(
                "bad_message",
                "semantic turn detection is off on this hub (limits.semantic_turns = false); "
                'use turn_detection {"type": "silence"}',
            )
        self._check_options(config)
        self._check_channels(config)
        return config

    def _check_auto(self, config: SessionConfig) -> None:
        """``provider: "auto"`` alone, on a hub that routes, without a ``model`` (the route
        picks engines and models)."""
        if self.router is None:
            raise HubError("unknown_provider", "provider 'auto': this hub has no router")
        if len(config.providers) > 1:
            raise HubError("bad_message", "provider 'auto' cannot be part of a failover list")
        if config.model is not None:
            raise HubError("bad_message", "provider 'auto' picks the model per utterance: drop \"model\"")
        unknown = [code for code in config.languages if not self.router.knows(code)]
        if unknown:
            raise HubError(
                "bad_message", f"unsupported language {', '.join(unknown)}: no engine of this hub knows it"
            )

    def _check_channels(self, config: SessionConfig) -> None:
        """A ``multichannel`` session: PCM or WAV audio (each channel is cut from the interleaved
        samples) with at most ``limits.max_channels`` channels."""
        if not config.multichannel:
            return
        audio, most = config.audio, self.limits.max_channels
        if audio.encoding not in ("pcm_s16le", "pcm_f32le", "wav"):
            raise HubError(
                "bad_message", f"multichannel needs pcm_s16le, pcm_f32le or wav audio, not {audio.encoding}"
            )
        if audio.channels > most:
            raise HubError(
                "bad_message", f"{audio.channels} channels: this hub transcribes at most {most} at once"
            )

    def _check_options(self, config: SessionConfig) -> None:
        """Refuse, up front, what the session's primary provider cannot do: an unknown model,
        a language its model does not know, translation on an English-only model."""
        names = [n for n in config.providers if n != NO_PROVIDER]
        if not names or names[0] == AUTO:
            return
        name = names[0]
        caps = self.providers[name].capabilities
        if config.model is not None and config.model not in caps.models:
            offered = ", ".join(caps.models) or "no choice of model"
            raise HubError(
                "bad_message", f"provider {name!r} has no model {config.model!r} (it offers: {offered})"
            )
        model = config.model or caps.default_model
        languages = caps.languages_of(model)
        wanted = [base_language(code) for code in config.languages]
        unknown = [code for code in wanted if languages is not None and code not in languages]
        if unknown:
            which = f"model {model!r} of {name!r}" if model is not None else repr(name)
            count = len(languages or ())
            known = ", ".join(languages or ()) if count <= 8 else f"{count} other languages"
            hint = '; pick a multilingual model (e.g. "model": "base")' if languages == ("en",) else ""
            raise HubError(
                "bad_message",
                f"unsupported language {', '.join(unknown)}: the {which} transcribes {known}{hint}",
            )
        if config.task == "translate":
            if not caps.translate:
                raise HubError("bad_message", f"provider {name!r} does not translate")
            if languages == ("en",):
                raise HubError("bad_message", f"the model {model!r} is English-only: it cannot translate")

    def resolve_model(self, name: str | None) -> tuple[str | None, str | None]:
        """An API's ``model`` field → (provider, model); None parts mean the defaults.

        The rule every transport follows: ``"whisper"`` names a provider (its default model);
        ``"whisper:base"`` or ``"whisper-base"`` a provider and one of its models; ``"base"`` or
        ``"tiny.en"`` a model of the default provider (or of the first provider that has it).
        Unknown names raise ``unknown_provider``."""
        if not name:
            return None, None
        if name == AUTO and self.router is not None:
            return AUTO, None
        if name in self.providers:
            return name, None
        for sep in (":", "-", "/"):
            provider, _, model = name.partition(sep)
            if model and provider in self.providers and model in self.providers[provider].capabilities.models:
                return provider, model
        order = [self.default_provider, *sorted(self.providers)]
        for provider in order:
            if provider in self.providers and name in self.providers[provider].capabilities.models:
                return (None if provider == self.default_provider else provider), name
        known = [*sorted(self.providers)] + [
            f"{p}:{m}" for p in sorted(self.providers) for m in self.providers[p].capabilities.models
        ]
        if self.router is not None:
            known.append(AUTO)
        raise HubError(
            "unknown_provider",
            f"the model {name!r} does not exist on this hub; available: {', '.join(known)}",
        )

    def open(
        self,
        config: SessionConfig | Mapping[str, Any] | None = None,
        *,
        _admitted: bool = False,
        **options: Unpack[OpenOptions],
    ) -> Session:
        """Open a session (``options``: :class:`OpenOptions`). Raises :class:`HubError`
        (``capacity``, ``unknown_provider``, …)."""
        try:
            session = self._open(config, **options)
        except HubError as exc:
            self.metrics.error(exc.code)
            raise
        if self.cluster is not None and not _admitted and not session.closed:
            self.cluster.hold(session.id, options.get("key"))
        self.metrics.session_opened(session.ctx.transport)
        return session

    async def open_async(
        self,
        config: SessionConfig | Mapping[str, Any] | None = None,
        *,
        resumed: bool = False,
        **options: Unpack[OpenOptions],
    ) -> Session:
        """:meth:`open`, after taking a cluster-wide slot when there is a cluster. ``resumed``:
        the session already held one (on a node that died): it is not refused for capacity.
        Redis unreachable: this node's own limits decide (docs/cluster.md)."""
        await self.prepare(config)
        cluster = self.cluster
        if cluster is None:
            return self.open(config, **options)
        resolved = self.resolve_config(config)
        if not self.accepting:
            self.metrics.error("capacity")
            raise HubError("capacity", "the hub is shutting down", fatal=True)
        session_id = options.get("session_id")
        if session_id is None:
            session_id = options["session_id"] = secrets.token_urlsafe(12)
        key = options.get("key")
        await self.usage.refresh(key)
        if not resumed:
            self.usage.check(key)  # before a lease is taken
        most = self.usage.max_sessions(key)
        verdict = await cluster.admit(session_id, key, force=resumed, max_per_key=most)
        if verdict:
            self.metrics.error("capacity")
            if verdict == 1:
                raise HubError(
                    "capacity",
                    f"the cluster is at its limit of {self.limits.max_sessions} sessions",
                    fatal=True,
                )
            raise HubError("capacity", f"this API key is at its limit of {most} sessions", fatal=True)
        try:
            session = self.open(resolved, _admitted=True, **options)
        except BaseException:
            cluster.release(session_id)
            raise
        if session.closed:
            cluster.release(session_id)
        return session

    async def prepare(self, config: SessionConfig | Mapping[str, Any] | None) -> None:
        """Run off the loop the loads a session of ``config`` needs (:attr:`preparations`). A
        config the hub refuses, or a load that fails for the session's reason (an unknown wake
        word), is left to :meth:`open`, which says why."""
        if not self.preparations:
            return
        try:
            resolved = self.resolve_config(config)
        except HubError:
            return
        for preparation in self.preparations:
            load = preparation(resolved)
            if load is not None:
                with contextlib.suppress(HubError):
                    await asyncio.to_thread(load)

    def _open(
        self,
        config: SessionConfig | Mapping[str, Any] | None,
        *,
        key: str | None = None,
        transport: str = "inproc",
        session_id: str | None = None,
        continuation: Operator | None = None,
        speakers: SpeakerMemory | None = None,
    ) -> Session:
        resolved = self.resolve_config(config)
        if resolved.trace and self.tracing is None:
            raise HubError("bad_message", "this hub records no traces (trace.dir is not set)", fatal=True)
        if not self.accepting:
            raise HubError("capacity", "the hub is shutting down", fatal=True)
        if len(self.sessions) >= self.limits.max_sessions:
            raise HubError(
                "capacity", f"the hub is at its limit of {self.limits.max_sessions} sessions", fatal=True
            )
        if key is not None and self._per_key[key] >= (most := self.usage.max_sessions(key)):
            raise HubError("capacity", f"this API key is at its limit of {most} sessions", fatal=True)
        self.usage.check(key)
        if session_id is None:
            session_id = secrets.token_urlsafe(12)
        elif session_id in self.sessions:
            raise HubError("bad_message", f"session {session_id!r} is already open", fatal=True)
        router = None
        if resolved.providers == (AUTO,) and self.router is not None:
            providers = self.router.default_engines()
            router = self.router.session(key, log.bind(session_id=session_id))
        else:
            providers = tuple(self.providers[n] for n in resolved.providers if n != NO_PROVIDER)
        ctx = Context(
            session_id=session_id,
            config=resolved,
            limits=self.limits,
            providers=providers,
            pending=Pending(self.limits.max_pending_segments),
            log=log.bind(session_id=session_id, provider="+".join(resolved.providers), transport=transport),
            transport=transport,
            breakers=self.breakers,
            decoder_slots=self.decoder_slots,
            metrics=self.metrics,
            key=key,
            usage=self.usage.session(key),
            span=session_span(session_id, transport, "+".join(resolved.providers)),
            stats=self.stats,
            router=router,
            speakers=SpeakerMemory() if speakers is None else speakers,
        )
        try:
            if self.tracing is not None:  # may refuse: capacity (trace.max_open)
                ctx = dataclasses.replace(ctx, trace=self.tracing.open(ctx))
            pipeline = self.pipeline_factory(ctx)
            if continuation is not None:
                inner, outer = pipeline, continuation
                pipeline = lambda source: outer(inner(source))  # noqa: E731
            session = Session(ctx, pipeline, on_closed=self._forget)
        except HubError:
            self.usage.release(ctx.usage)
            if ctx.trace is not None:
                ctx.trace.finish("error")  # a session that could not start: its trace says so
            end_session(ctx.span, "error")
            raise
        except Exception as exc:
            self.usage.release(ctx.usage)
            if ctx.trace is not None:
                ctx.trace.finish("error")
            end_session(ctx.span, "error")
            ctx.log.exception("session could not start")  # the client's config was valid: our bug
            raise HubError("internal_error", f"session could not start: {exc}", fatal=True) from exc
        self.usage.session_opened(key)
        if session.closed:  # failed while it was being built: its events tell the client why
            return session
        self.sessions[session_id] = session
        self.opened_total += 1
        if key is not None:
            self._per_key[key] += 1
            self._key_of[session_id] = key
        ctx.log.debug("session opened")
        return session

    def update(self, session: Session, patch: Mapping[str, Any] | None) -> SessionConfig:
        """Apply a ``session.update`` config patch to an open session (validated like a
        ``session.start`` config); returns the effective config. Fields that cannot change
        mid-stream (``audio``, ``provider``, ``wakeword``, ``vad.enabled``) raise
        ``bad_message`` naming them."""
        try:
            config = updated_config(session.config, dict(patch) if patch is not None else None)
        except ValueError as exc:
            raise HubError("bad_message", f"session.update refused: {exc}") from None
        except msgspec.ValidationError as exc:
            raise HubError("bad_message", f"invalid session config: {exc}") from None
        config = self.resolve_config(config)
        for preparation in self.preparations:  # a model the new settings need (Silero VAD)
            load = preparation(config)
            if load is not None:
                try:
                    load()  # blocking, once per hub (~50 ms); a missing model refuses the update
                except HubError as exc:  # the session goes on with its settings
                    raise HubError(exc.code, exc.message) from None
        session.reconfigure(config)
        return config

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def _forget(self, session: Session) -> None:
        self.usage.release(session.ctx.usage)
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        key = self._key_of.pop(session.id, None)
        if key is not None:
            self._per_key[key] -= 1
            if self._per_key[key] <= 0:
                del self._per_key[key]
        if self.cluster is not None:
            self.cluster.release(session.id)
        self.metrics.session_closed(session.ctx.transport, session.close_reason)
        session.ctx.log.debug("session closed", reason=session.close_reason)

    # ------------------------------------------------------------------ batch

    async def transcribe(
        self,
        samples: Samples,
        *,
        provider: str | tuple[str, ...] | None = None,
        language: str | tuple[str, ...] | None = None,
        prompt: str | None = None,
        model: str | None = None,
        task: str = "transcribe",
        keyterms: tuple[str, ...] = (),
        progress: Progress | None = None,
        job_s: float = JOB_S,
        diarize: bool = False,
        min_speakers: int = 1,
        max_speakers: int = MAX_SPEAKERS,
    ) -> tuple[str, Transcription]:
        """Transcribe 16 kHz mono audio of any length with the named provider (or failover list).

        ``language``, ``model``, ``task`` and ``keyterms`` mean what they mean in a session's
        config (validated the same way). The audio is cut into jobs of at most ``job_s``
        seconds (:mod:`asrhub.engine.uploads`), one engine call each at upload priority, one at a time,
        so live sessions' finals never wait behind a whole file; each job fails over on its own.
        Returns the name of the provider that served the first job and the merged transcription
        (times from the start of ``samples``). ``diarize``: every word and piece also gets its
        speaker (:mod:`asrhub.diarize`, ``min_speakers``–``max_speakers`` people), computed in a
        worker thread after the transcription.
        """
        fields: dict[str, Any] = {"task": task, "keyterms": list(keyterms)}
        if provider is not None:
            fields["provider"] = provider if isinstance(provider, str) else list(provider)
        if model is not None:
            fields["model"] = model
        if language is not None:
            fields["language"] = language if isinstance(language, str) else list(language)
        if prompt is not None:
            fields["prompt"] = prompt
        config = self.resolve_config(fields)
        options = config.decode_options()
        names = [n for n in config.providers if n != NO_PROVIDER]
        if not names:
            raise HubError("unknown_provider", "provider 'none' does not transcribe")
        total = len(samples) / TARGET_RATE
        key = CALLER.get()  # the request's caller (its door set it)
        await self.usage.refresh(key)
        self.usage.check(key, total)
        engines = [self.providers[name] for name in names if name != AUTO]
        if names == [AUTO] and self.router is not None:  # one route for the file, on its start
            route = await self.router.session(key, log).route(samples[: int(JOB_S * TARGET_RATE)], config)
            engines, options = list(route.providers), {**options, **route.options}
        parts: list[tuple[float, Transcription]] = []
        used = ""
        for a, b in jobs(samples, job_s):
            try:
                served = await failover(
                    engines,
                    samples[a:b],
                    breakers=self.breakers,
                    timeout_s=call_timeout(self.limits.provider_timeout_s, (b - a) / TARGET_RATE),
                    log=log,
                    priority=Priority.UPLOAD,
                    stats=self.stats,
                    **options,
                )
            except AllFailed as exc:
                raise HubError("provider_failed", str(exc)) from None
            self.usage.audio(key, (b - a) / TARGET_RATE)
            used = used or served.provider
            parts.append((a / TARGET_RATE, served.result))
            if progress is not None:
                progress(b / TARGET_RATE, total)
        merged = merge(parts, total)
        if not diarize:
            return used, merged
        turns = await asyncio.to_thread(self._turns, samples, min_speakers, max_speakers)
        return used, attribute(merged, turns)

    def _turns(self, samples: Samples, min_speakers: int, max_speakers: int) -> list[Turn]:
        try:
            diarizer = self.speakers.get()
        except FileNotFoundError as exc:
            raise HubError("bad_message", f"diarization is not available here: {exc}") from None
        return diarizer.diarize(samples, min_speakers=min_speakers, max_speakers=max_speakers)
