"""The stage of a *remote streaming* engine (FunASR online/2pass, Google streaming_recognize, or
a third party's): one engine stream per utterance, on the core's ordered stage.

The hub's VAD decides the boundaries: ``vad.speech_started`` opens an utterance, its audio
chunks are forwarded to the engine as they arrive, and ``vad.speech_ended`` ends its audio.
Without VAD, utterances are windows of ``limits.fixed_window_s``; with it, an utterance longer
than ``limits.max_utterance_s`` is split. The engine is one coroutine per utterance::

    recognize(audio: AsyncIterator[samples], on_partial: (text) -> None | None,
              config: SessionConfig) -> Transcription

with times relative to the utterance's first sample; ``on_partial`` is None when the session
wants no partials. ``config`` is the session's config as it stood in the stream when the
utterance began: a ``session.updated`` frame passing the stage holds from the next utterance on
(its final, language, key terms and word times included), never for audio that came before it.
Marble (``a`` = audio, ``S``/``E`` = VAD start/end, ``p`` = partial, ``F`` = final; VAD events
pass through at once)::

    upstream: -S-a-a-a-a-E-------S-a-a-E----|
    output:   -S---p---p-E--F----S---p-E--F-|

What the core adds (:mod:`asrhub.engine.ordered`, :mod:`asrhub.engine.failover`,
:mod:`asrhub.engine.breaker`): one final or one ``provider_failed`` per utterance in order,
``ctx.pending`` from an utterance's start to its outcome, partials only for the oldest unfinished
utterance. After its audio ended an utterance gets ``final_timeout_s`` for its final. When the
stream fails (any exception), the utterance's audio — kept only when there are fallbacks, bounded by
the utterance limit — goes through :func:`~asrhub.engine.failover.failover` over the fallbacks.
While the primary's shared breaker is not closed, utterances skip the stream when there are
fallbacks (they, then the primary's batch ``transcribe``, serve it), and when it is open they are
not sent to it at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from asrhub.config import SessionConfig
from asrhub.engine.failover import AllFailed, call_timeout, checked, describe, failover
from asrhub.engine.finals import final_event
from asrhub.engine.ordered import Ordered, engine_stage
from asrhub.frames import (
    AudioChunk,
    ErrorEvent,
    Event,
    FinalTranscript,
    Frame,
    PartialTranscript,
    Samples,
    SessionUpdated,
    SpeechEnded,
    SpeechStarted,
)
from asrhub.plugin import Operator, Provider, ProviderError, SessionContext, Transcription

Recognize = Callable[
    [AsyncIterator[Samples], Callable[[str], None] | None, SessionConfig], Awaitable[Transcription]
]


@dataclass(eq=False)
class _Utterance:
    segment_id: int
    start: float
    end: float
    keep_audio: bool
    config: SessionConfig
    """The session's config when the utterance began: it serves the whole utterance."""
    queue: asyncio.Queue[Samples | None] = field(default_factory=asyncio.Queue)
    chunks: list[Samples] = field(default_factory=list)
    audio_done: asyncio.Event = field(default_factory=asyncio.Event)
    last_partial: str = ""

    def add(self, chunk: AudioChunk) -> None:
        self.queue.put_nowait(chunk.samples)
        if self.keep_audio:
            self.chunks.append(chunk.samples)
        self.end = chunk.end

    def close(self) -> None:
        if not self.audio_done.is_set():
            self.queue.put_nowait(None)
            self.audio_done.set()

    async def audio(self) -> AsyncIterator[Samples]:
        while (samples := await self.queue.get()) is not None:
            yield samples

    def samples(self) -> Samples:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


def stream_stage(
    primary: Provider,
    recognize: Recognize,
    ctx: SessionContext,
    fallbacks: tuple[Provider, ...] = (),
    *,
    final_timeout_s: float = 30.0,
) -> Operator:
    """The per-session stage; ``recognize`` serves one utterance (see the module docstring)."""
    return engine_stage(
        ctx, primary.name, lambda out: _Streams(primary, recognize, ctx, fallbacks, out, final_timeout_s)
    )


class _Streams:
    def __init__(
        self,
        primary: Provider,
        recognize: Recognize,
        ctx: SessionContext,
        fallbacks: tuple[Provider, ...],
        out: Ordered,
        final_timeout_s: float,
    ) -> None:
        self.primary, self.recognize, self.ctx, self.fallbacks, self.out = (
            primary,
            recognize,
            ctx,
            fallbacks,
            out,
        )
        self.final_timeout_s = final_timeout_s
        self.config = ctx.config
        vad = ctx.config.vad.enabled
        self.max_len = ctx.limits.max_utterance_s if vad else ctx.limits.fixed_window_s
        self.speech = not vad
        self.current: _Utterance | None = None
        self.live: list[_Utterance] = []
        self.segment_id = 0

    # ------------------------------------------------------------------ upstream (event loop)
    def on_next(self, frame: Frame) -> None:
        if isinstance(frame, AudioChunk):
            if self.speech and len(frame.samples):
                current = self.current or self.open(frame)
                current.add(frame)
                if current.end - current.start >= self.max_len:
                    self.end_utterance()  # force-split; the next chunk opens the next one
            return
        if isinstance(frame, SpeechStarted):
            self.speech = True
        elif isinstance(frame, SpeechEnded):
            self.speech = not self.config.vad.enabled
            self.end_utterance()
        elif isinstance(frame, SessionUpdated) and frame.settings is not None:
            self.config = frame.settings  # from the next utterance on
        self.out.emit(frame)

    def on_completed(self) -> None:
        self.end_utterance()
        self.out.complete()

    def dispose(self) -> None:
        for utterance in self.live:
            utterance.close()
        self.live.clear()

    def open(self, chunk: AudioChunk) -> _Utterance:
        self.segment_id += 1
        utterance = _Utterance(
            self.segment_id, chunk.start, chunk.start, keep_audio=bool(self.fallbacks), config=self.config
        )
        self.live.append(utterance)
        self.current = utterance
        self.out.add(utterance.segment_id, self.run(utterance))
        return utterance

    def end_utterance(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None

    def on_partial(self, utterance: _Utterance, text: str) -> None:
        text = text.strip()
        if not text or text == utterance.last_partial:
            return
        if self.out.oldest() == utterance.segment_id:
            utterance.last_partial = text
            self.out.emit(PartialTranscript(utterance.segment_id, text, utterance.start, utterance.end))

    # ------------------------------------------------------------------ one utterance's job
    async def run(self, utterance: _Utterance) -> Event:
        try:
            return await self.serve(utterance)
        finally:
            if utterance in self.live:
                self.live.remove(utterance)

    async def serve(self, utterance: _Utterance) -> Event:
        breaker = self.ctx.breakers.of(self.primary)
        if (self.fallbacks and breaker.state != "closed") or not breaker.usable:
            await utterance.audio_done.wait()  # the stream failed lately: batch calls serve it
            return await self.failover(utterance, (*self.fallbacks, self.primary), [])
        try:
            result = checked(await self.stream(utterance))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = describe(self.primary.name, exc)
            breaker.failed(failure)
            expected = isinstance(exc, ProviderError | TimeoutError | OSError)
            self.ctx.log.warning(
                "utterance failed", provider=self.primary.name, segment_id=utterance.segment_id, error=failure
            )
            if not expected:  # an engine's fault, handled: its traceback at debug level
                self.ctx.log.debug("stream failure traceback", provider=self.primary.name, exc_info=True)
            await utterance.audio_done.wait()
            return await self.failover(utterance, self.fallbacks, [failure])
        breaker.succeeded()
        return self.final(utterance, result, self.primary.name)

    async def stream(self, utterance: _Utterance) -> Transcription:
        config = utterance.config
        on_partial = (lambda t: self.on_partial(utterance, t)) if config.partials else None
        job = asyncio.ensure_future(self.recognize(utterance.audio(), on_partial, config))
        try:
            ended = asyncio.ensure_future(utterance.audio_done.wait())
            await asyncio.wait({job, ended}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            try:
                return await asyncio.wait_for(job, self.final_timeout_s)
            except TimeoutError:
                raise TimeoutError(
                    f"{self.primary.name}: no final result within {self.final_timeout_s:g} s "
                    "after the end of audio"
                ) from None
        finally:
            job.cancel()

    async def failover(
        self, utterance: _Utterance, providers: tuple[Provider, ...], failures: list[str]
    ) -> FinalTranscript | ErrorEvent:
        config, limits = utterance.config, self.ctx.limits
        try:
            served = await failover(
                providers,
                utterance.samples(),
                breakers=self.ctx.breakers,
                timeout_s=call_timeout(limits.provider_timeout_s, utterance.end - utterance.start),
                log=self.ctx.log,
                segment_id=utterance.segment_id,
                failures=failures,
                stats=self.ctx.stats,
                **config.decode_options(),
            )
        except AllFailed as exc:
            return ErrorEvent("provider_failed", str(exc), False, utterance.segment_id)
        return self.final(utterance, served.result, served.provider)

    def final(self, utterance: _Utterance, result: Transcription, provider: str) -> FinalTranscript:
        config = utterance.config
        return final_event(
            utterance.segment_id,
            result,
            provider=provider,
            start=utterance.start,
            end=utterance.end,
            offset=utterance.start,
            words=config.word_timestamps,
            language=config.fixed_language,
        )
