"""The provider stage shared by every batch engine (faster-whisper, OpenAI, …).

Consumes :class:`~asrhub.frames.Segment` frames and turns them into transcript events::

    in : --S1p--S1p--S1f--------S2f---------S3f-|
    out: ------P1---------F1--------F2(alt)----E3----|
         P = transcript.partial   F = transcript.final   E = error (provider_failed)

* **Finals** (``Segment(final=True)``): exactly one ``transcript.final`` or one non-fatal
  ``error`` (``provider_failed``, with ``segment_id``) per segment, emitted in segment order.
  A session's finals are transcribed one after the other (sessions run in parallel in the
  engine's pool), so each call's timeout starts when the session's previous one is done.
  Each is tried on the primary, then on each fallback in order, on the same audio; a call
  longer than ``limits.provider_timeout_s`` counts as a failure. A provider that failed is
  tried last for ``cooldown_s`` (wall clock), so a dead engine costs one timeout per session,
  not one per utterance. A final whose audio holds no speech is still
  emitted, with empty ``text``: the client gets closure for the partials it may have shown.
* **Partials** (``Segment(final=False)``): best effort, never at the cost of a final. At most
  one partial decode per session is in flight; while it runs, only the newest snapshot waits.
  A decode starts only when the engine's pool is idle and this session has no final
  outstanding (else the snapshot is shed), and its result is dropped once that utterance's
  final segment has arrived (segment ids increase).
* **Backpressure**: ``ctx.pending`` is acquired when a final segment enters and released when
  its final (or error) has been emitted.
* **Live reconfiguration**: a ``session.updated`` frame passing through replaces the config
  (language, task, key terms, model…) used for the utterances that arrive after it.
* Every result is emitted on the event loop (awaited tasks, done callbacks). Other frames pass
  through at once. Completion waits for the outstanding finals; dispose cancels everything
  and nothing is emitted afterwards.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from asrhub.config import SessionConfig
from asrhub.frames import (
    ErrorEvent,
    Event,
    FinalTranscript,
    Frame,
    PartialTranscript,
    Segment,
    SessionUpdated,
    Word,
)
from asrhub.pipeline import Operator, SessionContext
from asrhub.provider import Provider, ProviderError, Transcription

PartialFn = Callable[..., "asyncio.Task[Transcription] | None"]
"""``fn(samples, language=…, prompt=…)``: start a partial decode now, or return None (shed)."""


def batch_stage(
    primary: Provider,
    ctx: SessionContext,
    fallbacks: tuple[Provider, ...] = (),
    *,
    partial: PartialFn | None = None,
    cooldown_s: float = 30.0,
) -> Operator:
    providers = (primary, *fallbacks)

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            run = _Run(providers, ctx, observer, partial, cooldown_s)
            subscription = source.subscribe(run.on_next, run.on_error, run.on_completed, scheduler=scheduler)

            def dispose() -> None:
                run.dispose()
                subscription.dispose()

            return Disposable(dispose)

        return Observable(subscribe)

    return operator


class _Run:
    """The state of one subscription (one session)."""

    def __init__(
        self,
        providers: tuple[Provider, ...],
        ctx: SessionContext,
        observer: abc.ObserverBase[Frame],
        partial: PartialFn | None,
        cooldown_s: float,
    ) -> None:
        self.providers, self.ctx, self.observer = providers, ctx, observer
        self.partial, self.cooldown_s = partial, cooldown_s
        self.config: SessionConfig = ctx.config
        self.loop = asyncio.get_running_loop()
        self.finals: deque[asyncio.Task[Event]] = deque()
        self.failed_at: dict[str, float] = {}
        self.last_final: int | None = None
        self.inflight: asyncio.Task[Transcription] | None = None
        self.waiting: Segment | None = None
        self.completed = False
        self.done = False

    # ---------------------------------------------------------------- upstream
    def on_next(self, frame: Frame) -> None:
        if self.done:
            return
        try:
            if not isinstance(frame, Segment):
                if isinstance(frame, SessionUpdated) and isinstance(frame.settings, SessionConfig):
                    self.config = frame.settings
                self.observer.on_next(frame)
            elif frame.final:
                self.ctx.pending.acquire()
                self.last_final, self.waiting = frame.segment_id, None
                previous = self.finals[-1] if self.finals else None
                task = self.loop.create_task(self.serve(frame, previous, self.config))
                self.finals.append(task)
                task.add_done_callback(self.flush)
            elif self.is_current(frame) and not self.finals:  # our own final goes first
                if self.inflight is None:
                    self.start_partial(frame)
                else:
                    self.waiting = frame
        except Exception as exc:  # never let an exception escape on_next
            self.observer.on_next(ErrorEvent("provider_failed", f"{type(exc).__name__}: {exc}"))

    def on_completed(self) -> None:
        self.completed, self.waiting = True, None
        self.flush()

    def on_error(self, exc: Exception) -> None:
        self.dispose()
        self.observer.on_error(exc)

    def dispose(self) -> None:
        self.done, self.waiting = True, None
        for task in self.finals:
            task.cancel()
        self.finals.clear()
        if self.inflight is not None:
            self.inflight.cancel()

    # ---------------------------------------------------------------- finals
    def order(self) -> list[Provider]:
        now = self.loop.time()
        healthy = [p for p in self.providers if now - self.failed_at.get(p.name, -1e18) > self.cooldown_s]
        return healthy + [p for p in self.providers if p not in healthy]

    async def serve(self, seg: Segment, previous: asyncio.Task[Event] | None, config: SessionConfig) -> Event:
        if previous is not None:  # one final at a time per session: see the module docstring
            await asyncio.wait([previous])
        options = config.decode_options()
        timeout = self.ctx.limits.provider_timeout_s * max(1.0, (seg.end - seg.start) / 30.0)
        failures: list[str] = []
        for provider in self.order():
            try:
                result = await asyncio.wait_for(provider.transcribe(seg.samples, **options), timeout)
                result = checked(result)
                event = final_event(seg, provider.name, result, config.word_timestamps, config.fixed_language)
            except TimeoutError:
                failures.append(f"{provider.name}: no answer within {timeout:g} s")
            except ProviderError as exc:
                failures.append(f"{provider.name}: {exc}")
            except Exception as exc:  # an engine bug must not end the session
                failures.append(f"{provider.name}: {type(exc).__name__}: {exc}")
            else:
                self.failed_at.pop(provider.name, None)
                return event
            self.failed_at[provider.name] = self.loop.time()
            self.ctx.log.warning("provider failed", segment_id=seg.segment_id, error=failures[-1])
        return ErrorEvent("provider_failed", "; ".join(failures), False, seg.segment_id)

    def flush(self, _: object = None) -> None:
        while self.finals and self.finals[0].done() and not self.done:
            self.observer.on_next(self.finals.popleft().result())
            self.ctx.pending.release()
        if self.completed and not self.finals and not self.done:
            self.done = True
            self.observer.on_completed()

    # ---------------------------------------------------------------- partials
    def is_current(self, seg: Segment) -> bool:
        return self.last_final is None or seg.segment_id > self.last_final

    def start_partial(self, seg: Segment) -> None:
        if self.partial is None or self.providers[0].name in self.failed_at:
            return
        task = self.partial(seg.samples, **self.config.decode_options())
        if task is not None:
            self.inflight = task
            task.add_done_callback(lambda t: self.partial_done(seg, t))

    def partial_done(self, seg: Segment, task: asyncio.Task[Transcription]) -> None:
        self.inflight = None
        if self.done or self.completed or task.cancelled():
            return
        exc = task.exception()
        text = getattr(task.result(), "text", None) if exc is None else None
        if exc is not None:
            self.ctx.log.debug("partial failed", segment_id=seg.segment_id, error=repr(exc))
        elif self.is_current(seg) and text and isinstance(text, str):
            self.observer.on_next(PartialTranscript(seg.segment_id, text, seg.start, seg.end))
        waiting, self.waiting = self.waiting, None
        if waiting is not None and self.is_current(waiting):
            self.start_partial(waiting)


def checked(result: object) -> Transcription:
    """``result`` if it is a well-formed :class:`Transcription`; garbage from an engine (another
    type, non-string text, malformed or non-finite word times) raises :class:`ProviderError`,
    so it fails over or becomes ``provider_failed`` instead of reaching a client."""
    if not isinstance(result, Transcription):
        raise ProviderError(f"the engine returned {type(result).__name__}, not a Transcription")
    if not isinstance(result.text, str) or not isinstance(result.language, str | None):
        raise ProviderError("the engine returned a transcription whose text or language is not a string")
    for w in result.words or ():
        if not (
            isinstance(w, Word)
            and isinstance(w.word, str)
            and all(isinstance(v, int | float) and math.isfinite(v) for v in (w.start, w.end, w.probability))
        ):
            raise ProviderError(f"the engine returned a malformed word: {w!r:.80}")
    return result


def final_event(
    seg: Segment, provider: str, result: Transcription, with_words: bool = True, language: str | None = None
) -> FinalTranscript:
    """A ``transcript.final`` in stream time (the engine's times are relative to the segment)."""
    words: tuple[Word, ...] | None = None
    if with_words and result.words is not None:
        words = tuple(
            Word(w.word, round(seg.start + w.start, 3), round(seg.start + w.end, 3), round(w.probability, 3))
            for w in result.words
        )
    return FinalTranscript(
        segment_id=seg.segment_id,
        text=result.text,
        start=seg.start,
        end=seg.end,
        provider=provider,
        language=result.language or language,
        words=words,
        language_probability=result.language_probability,
    )
