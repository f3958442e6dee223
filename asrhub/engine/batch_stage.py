"""The stage of every batch engine (faster-whisper, OpenAI, FunASR offline, Google recognize,
or a third party's): :class:`~asrhub.frames.Segment` frames in, transcript events out::

    in : --S1p--S1p--S1f--------S2f---------S3f-|
    out: ------P1---------F1--------F2(alt)----E3----|
         P = transcript.partial   F = transcript.final   E = error (provider_failed)

* **Finals** (``Segment(final=True)``): one job each on the core's ordered stage
  (:mod:`asrhub.engine.ordered`: exactly one final or one ``provider_failed`` per segment, in
  segment order, ``ctx.pending`` held meanwhile). A session's finals are transcribed one after
  the other (sessions run in parallel in the engine's pool), so each call's timeout
  (``limits.provider_timeout_s`` per 30 s of audio) starts when the previous one is done. Each
  goes through :func:`asrhub.engine.failover.failover` over ``(primary, *fallbacks)``, ordered by the
  hub's shared circuit breakers. A final whose audio holds no speech is still emitted, with
  empty ``text``: the client gets closure for the partials it may have shown.
* **Partials** (``Segment(final=False)``): best effort, never at the cost of a final. At most
  one partial decode per session is in flight; while it runs, only the newest snapshot waits.
  A decode starts only when the engine's pool is idle (``partial`` returns None otherwise), this
  session has no final outstanding and the primary's circuit is closed; a snapshot refused
  for now (the engine busy, this session's final or early final running, or shed for a final)
  is offered again every ``PARTIAL_RETRY_S`` until a newer one or the final comes, so a client
  that pauses its audio mid-utterance still gets a partial of all it sent. When the utterance's
  final segment arrives, the partial decode in flight is cancelled: one still waiting in the
  engine's queue never runs (the engine sheds waiting partials for any final as well), one
  already running finishes on its own lane (a CPU decode cannot be stopped midway) and its
  result is dropped. With
  ``limits.stable_partials`` each partial carries ``stable``: the words two consecutive decodes
  of the utterance agreed on (:mod:`asrhub.engine.local_agreement`), kept verbatim from then on;
  the final is the final decode's own text and words.
* **Early finals** (``Segment(final=False, speculative=True)``, made at a pause the VAD heard
  before its hangover ends): the final decode starts at once on the audio so far, through the
  same failover. When the utterance's final Segment comes and its speech ended within that audio
  (``voiced_end`` ≤ the speculative segment's ``end``), the decode already under way serves as
  its final — so a VAD-endpointed final costs about max(hangover, inference), not their sum.
  When speech resumed (or another pause came), the speculative decode is cancelled and its
  result dropped. Counts per session in ``ctx.early_finals`` (started, used, dropped); its
  ``latest`` is the newest speculative decode's (end, future of its text), which the semantic
  end of turn reads (``operators/_turn_end.py``).
* **Routed sessions** (``provider: "auto"``, a ``router``): each final's engines are chosen
  for that utterance (:mod:`asrhub.routing`: language, health, load, the key's policy) and
  handed to the same failover; the final carries ``route`` (why). Partials come from the
  engine of the session's latest route when it re-decodes (whisper; with a language hint the
  first utterance is routed at its first partial): none before the first route, none from an
  engine without partial decodes (Vosk under ``auto``).
* **Live reconfiguration**: a ``session.updated`` frame passing through replaces the config
  (language, task, key terms, model…) used for the utterances that arrive after it.
* Other frames pass through at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine
from typing import Any

from asrhub.config import SessionConfig
from asrhub.engine.failover import AllFailed, Served, call_timeout, failover
from asrhub.engine.finals import final_event
from asrhub.engine.local_agreement import StablePrefix
from asrhub.engine.ordered import Ordered, engine_stage
from asrhub.frames import ErrorEvent, Event, Frame, PartialTranscript, Segment, SessionUpdated
from asrhub.plugin import Operator, PoolFull, Provider, SessionContext, Transcription, UtteranceRouter
from asrhub.telemetry import utterance

PARTIAL_RETRY_S = 0.1
"""A partial snapshot the engine refused (busy) is offered again after this long."""

PartialFn = Callable[..., "asyncio.Task[Transcription] | None"]
"""``fn(samples, language=…, prompt=…)``: start a partial decode now, or return None (shed)."""


def batch_stage(
    primary: Provider,
    ctx: SessionContext,
    fallbacks: tuple[Provider, ...] = (),
    *,
    partial: PartialFn | None = None,
    router: UtteranceRouter | None = None,
) -> Operator:
    """``router``: each final's engines come from it (``provider: "auto"``), not from
    ``(primary, *fallbacks)``, and its partials from the router (``partial`` is unused)."""
    providers = (primary, *fallbacks)
    name = "auto" if router is not None else primary.name
    partial = router.partial if router is not None else partial
    return engine_stage(ctx, name, lambda out: _Batch(providers, ctx, out, partial, router))


class _Batch:
    """The state of one subscription (one session)."""

    def __init__(
        self,
        providers: tuple[Provider, ...],
        ctx: SessionContext,
        out: Ordered,
        partial: PartialFn | None,
        router: UtteranceRouter | None = None,
    ) -> None:
        self.providers, self.ctx, self.out, self.partial = providers, ctx, out, partial
        self.router = router
        self.config: SessionConfig = ctx.config
        self.previous: asyncio.Task[Event] | None = None
        self.last_final: int | None = None
        self.inflight: asyncio.Task[Transcription] | None = None
        self.waiting: Segment | None = None
        self.retry: asyncio.TimerHandle | None = None
        """A refused partial tried again (the engine was busy and no newer snapshot came)."""
        self.spec: tuple[Segment, asyncio.Task[Served]] | None = None
        self.counts = ctx.early_finals
        self.agreement: tuple[int, StablePrefix] | None = None
        """The utterance whose partials are being decoded, and its stable words."""

    segment_id = None
    """A failure on a frame that is not a Segment belongs to no utterance."""

    def on_next(self, frame: Frame) -> None:
        if not isinstance(frame, Segment):
            if isinstance(frame, SessionUpdated) and frame.settings is not None:
                self.config = frame.settings
            self.out.emit(frame)
        elif frame.final:
            self.last_final, self.waiting, self.agreement = frame.segment_id, None, None
            self.cancel_retry()
            if self.inflight is not None:  # its result would be dropped: withdraw it if it waits
                self.inflight.cancel()
            early = self.take_speculation(frame)
            self.previous = self.out.add(
                frame.segment_id, self.serve(frame, self.previous, self.config, early)
            )
        elif frame.speculative:
            if self.is_current(frame):
                self.speculate(frame)
        elif self.is_current(frame):
            self.cancel_retry()  # a newer snapshot replaces a refused one
            self.offer_partial(frame)

    def on_completed(self) -> None:
        self.waiting = None
        self.cancel_retry()
        self.out.complete()

    def dispose(self) -> None:
        self.waiting = None
        self.cancel_retry()
        if self.inflight is not None:
            self.inflight.cancel()
        self.drop_speculation()

    # ---------------------------------------------------------------- finals
    async def serve(
        self,
        seg: Segment,
        previous: asyncio.Task[Event] | None,
        config: SessionConfig,
        early: asyncio.Task[Served] | None = None,
    ) -> Event:
        try:
            with utterance(self.ctx.span, seg.segment_id, seg.start, seg.end):
                if early is not None:  # the decode started at the pause covers all the speech
                    served = await early
                else:
                    if previous is not None:  # one final at a time per session: see the module docstring
                        await asyncio.wait([previous])
                    served = await self.decode(seg, config)
        except AllFailed as exc:
            return ErrorEvent("provider_failed", str(exc), False, seg.segment_id)
        return final_event(
            seg.segment_id,
            served.result,
            provider=served.provider,
            start=seg.start,
            end=seg.end,
            offset=seg.start,
            words=config.word_timestamps,
            language=config.fixed_language,
            route=served.route,
        )

    def decode(self, seg: Segment, config: SessionConfig) -> Coroutine[Any, Any, Served]:
        if self.router is not None:
            return self.routed(self.router, seg, config)
        return self.failover(self.providers, seg, config.decode_options())

    async def routed(self, router: UtteranceRouter, seg: Segment, config: SessionConfig) -> Served:
        route = await router.route(seg.samples, config)
        if not route.providers:
            language = route.reason.get("language") or "unknown"
            raise AllFailed(f"no engine this key may use serves language {language} (routing)")
        served = await self.failover(route.providers, seg, {**config.decode_options(), **route.options})
        return dataclasses.replace(served, route=route.reason)

    def failover(
        self, providers: tuple[Provider, ...], seg: Segment, options: dict[str, Any]
    ) -> Coroutine[Any, Any, Served]:
        return failover(
            providers,
            seg.samples,
            breakers=self.ctx.breakers,
            timeout_s=call_timeout(self.ctx.limits.provider_timeout_s, seg.end - seg.start),
            log=self.ctx.log,
            segment_id=seg.segment_id,
            stats=self.ctx.stats,
            **options,
        )

    # ---------------------------------------------------------------- early finals
    def speculate(self, seg: Segment) -> None:
        self.drop_speculation()  # an earlier pause of this utterance: speech went on after it
        task = asyncio.get_running_loop().create_task(self.speculative_decode(seg, self.config))
        task.add_done_callback(_consume)
        self.spec = (seg, task)
        self.counts.started += 1
        text: asyncio.Future[str | None] = task.get_loop().create_future()
        task.add_done_callback(lambda t: _publish(t, text))
        self.counts.latest = (seg.end, text)

    async def speculative_decode(self, seg: Segment, config: SessionConfig) -> Served:
        with utterance(self.ctx.span, seg.segment_id, seg.start, seg.end, speculative=True):
            return await self.decode(seg, config)

    def take_speculation(self, final: Segment) -> asyncio.Task[Served] | None:
        """The speculative decode that can serve ``final``, if there is one (else dropped)."""
        spec, self.spec = self.spec, None
        if spec is None:
            return None
        seg, task = spec
        covered = final.voiced_end is not None and final.voiced_end <= seg.end + 1e-3
        if seg.segment_id == final.segment_id and covered and seg.start == final.start:
            self.counts.used += 1
            return task
        self.spec = spec
        self.drop_speculation()
        return None

    def drop_speculation(self) -> None:
        spec, self.spec = self.spec, None
        if spec is not None:
            spec[1].cancel()
            self.counts.dropped += 1

    # ---------------------------------------------------------------- partials
    def is_current(self, seg: Segment) -> bool:
        return self.last_final is None or seg.segment_id > self.last_final

    def start_partial(self, seg: Segment) -> None:
        if self.partial is None:
            return
        if self.router is None and self.ctx.breakers.of(self.providers[0]).state != "closed":
            return  # (a router checks its own engine's circuit)
        task = self.partial(seg.samples, **self.config.decode_options())
        if task is None:  # the engine is busy (a final, an early final, another session)
            self.retry_later(seg)
            return
        self.inflight = task
        task.add_done_callback(lambda t: self.partial_done(seg, t))

    def offer_partial(self, seg: Segment) -> None:
        """Decode the newest snapshot ``seg`` now, after the decode in flight, or — while this
        session's final or early final runs — once they are done."""
        if self.out.outstanding or self.spec is not None:
            self.retry_later(seg)
        elif self.inflight is None:
            self.start_partial(seg)
        else:
            self.waiting = seg

    def retry_later(self, seg: Segment) -> None:
        """A snapshot the engine could not take yet is offered again in ``PARTIAL_RETRY_S``
        (until a newer one, the utterance's final or the end): a client that pauses its audio
        mid-utterance still gets a partial of all it sent."""
        self.cancel_retry()
        self.retry = asyncio.get_running_loop().call_later(PARTIAL_RETRY_S, self.retry_partial, seg)

    def retry_partial(self, seg: Segment) -> None:
        self.retry = None
        if self.is_current(seg) and not (self.out.done or self.out.completed):
            self.offer_partial(seg)

    def cancel_retry(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None

    def partial_done(self, seg: Segment, task: asyncio.Task[Transcription]) -> None:
        self.inflight = None
        if self.out.done or self.out.completed or task.cancelled():
            return
        exc = task.exception()
        result = task.result() if exc is None else None
        text = result.text if isinstance(result, Transcription) else None  # garbage: no partial
        if exc is not None:
            self.ctx.log.debug("partial failed", segment_id=seg.segment_id, error=repr(exc))
        elif self.is_current(seg) and text and isinstance(text, str):
            self.out.emit(self.partial_event(seg, text))
        waiting, self.waiting = self.waiting, None
        if waiting is not None and self.is_current(waiting):
            self.start_partial(waiting)
        elif isinstance(exc, PoolFull) and self.is_current(seg):  # shed for a final: offered again
            self.retry_later(seg)

    def partial_event(self, seg: Segment, text: str) -> PartialTranscript:
        if not self.ctx.limits.stable_partials:
            return PartialTranscript(seg.segment_id, text, seg.start, seg.end)
        if self.agreement is None or self.agreement[0] != seg.segment_id:
            self.agreement = (seg.segment_id, StablePrefix())
        stable, text = self.agreement[1].update(text)
        return PartialTranscript(seg.segment_id, text, seg.start, seg.end, stable=stable)


def _publish(task: asyncio.Task[Served], text: asyncio.Future[str | None]) -> None:
    """A speculative decode's text, for the semantic end of turn (None: it failed or was dropped)."""
    if not text.done():
        ok = not task.cancelled() and task.exception() is None
        text.set_result(task.result().result.text if ok else None)


def _consume(task: asyncio.Task[Served]) -> None:
    """A dropped (or never awaited) speculative decode must not log 'exception never retrieved'."""
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()
