"""stream_utterances: the last stage for a *remote streaming* engine (FunASR online/2pass, Google
streaming_recognize). Shared by :mod:`asrhub.providers.funasr` and :mod:`asrhub.providers.google`.

One engine stream per utterance. The hub's VAD decides the boundaries: ``vad.speech_started``
opens an utterance, its audio chunks are forwarded to the engine as they arrive, and
``vad.speech_ended`` ends its audio (FunASR: ``{"is_speaking": false}``; Google: half-close).
Without VAD, utterances are windows of ``limits.fixed_window_s``; with it, an utterance longer
than ``limits.max_utterance_s`` is split. The engine is one coroutine per utterance::

    recognize(audio: AsyncIterator[samples], on_partial: (text) -> None) -> Transcription

with times relative to the utterance's first sample. Marble (``a`` = audio, ``S``/``E`` = VAD
start/end, ``p`` = partial, ``F`` = final; VAD events pass through at once)::

    upstream: -S-a-a-a-a-E-------S-a-a-E----|
    output:   -S---p---p-E--F----S---p-E--F-|

Rules kept here so the engines don't have to:

* every utterance ends in exactly one ``transcript.final`` or one ``error`` (with its
  ``segment_id``), finals leave in utterance order; partials of an utterance that is not the
  oldest unfinished one are dropped (a later final would overtake them anyway);
* ``ctx.pending`` counts utterances from their start to their final (backpressure on ``feed``);
* after its audio ended, an utterance gets ``final_timeout_s`` for its final;
* when the engine fails (``ProviderError``, a timeout, a socket error), the utterance's audio —
  kept only when there are fallbacks, bounded by the utterance limit — goes to each fallback's
  ``transcribe`` in turn; the final names the provider that served it. No fallback left:
  ``error`` ``provider_failed`` with every failure's message; the session lives on. For
  ``cooldown_s`` after a failure, the next utterances skip the stream: fallbacks first, then the
  primary's own batch ``transcribe`` (as the batch stage does, a dead engine costs one failure per
  session, not one per utterance);
* ``session.end`` (upstream completion) ends the open utterance, waits for every final, then
  completes; disposal cancels every engine stream.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from asrhub.frames import (
    AudioChunk,
    ErrorEvent,
    FinalTranscript,
    Frame,
    PartialTranscript,
    Samples,
    SpeechEnded,
    SpeechStarted,
)
from asrhub.pipeline import Operator, SessionContext
from asrhub.provider import Provider, ProviderError, Transcription

Recognize = Callable[[AsyncIterator[Samples], Callable[[str], None]], Awaitable[Transcription]]

FAILURES = (ProviderError, TimeoutError, OSError)


@dataclass(eq=False)
class _Utterance:
    segment_id: int
    start: float
    end: float
    keep_audio: bool
    queue: asyncio.Queue[Samples | None] = field(default_factory=asyncio.Queue)
    chunks: list[Samples] = field(default_factory=list)
    audio_done: asyncio.Event = field(default_factory=asyncio.Event)
    result: FinalTranscript | ErrorEvent | None = None
    last_partial: str = ""
    task: asyncio.Task[None] | None = None

    def add(self, chunk: AudioChunk) -> None:
        self.queue.put_nowait(chunk.samples)
        if self.keep_audio:
            self.chunks.append(chunk.samples)
        self.end = chunk.end

    def close(self) -> None:
        if not self.audio_done.is_set():
            self.queue.put_nowait(None)
            self.audio_done.set()


def stream_utterances(
    primary: Provider,
    recognize: Recognize,
    ctx: SessionContext,
    fallbacks: tuple[Provider, ...] = (),
    *,
    final_timeout_s: float = 30.0,
    cooldown_s: float = 30.0,
) -> Operator:
    """The per-session stage; ``recognize`` serves one utterance (see the module docstring)."""
    config, limits = ctx.config, ctx.limits
    name = primary.name
    max_len = limits.max_utterance_s if config.vad.enabled else limits.fixed_window_s

    def stage(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            loop = asyncio.get_running_loop()
            order: deque[_Utterance] = deque()
            state: dict[str, Any] = {
                "current": None,
                "speech": not config.vad.enabled,
                "ids": 0,
                "failed_at": -1e18,
            }
            flags = {"completed": False, "disposed": False}

            def emit(frame: Frame) -> None:
                if not flags["disposed"]:
                    observer.on_next(frame)

            def flush() -> None:
                while order and order[0].result is not None:
                    utterance = order.popleft()
                    assert utterance.result is not None
                    emit(utterance.result)
                    ctx.pending.release()
                if flags["completed"] and not order and not flags["disposed"]:
                    flags["disposed"] = True
                    observer.on_completed()

            def on_partial(utterance: _Utterance, text: str) -> None:
                text = text.strip()
                if not config.partials or not text or text == utterance.last_partial:
                    return
                if order and order[0] is utterance and utterance.result is None:
                    utterance.last_partial = text
                    emit(PartialTranscript(utterance.segment_id, text, utterance.start, utterance.end))

            async def audio_of(utterance: _Utterance) -> AsyncIterator[Samples]:
                while (samples := await utterance.queue.get()) is not None:
                    yield samples

            async def run(utterance: _Utterance) -> None:
                if fallbacks and loop.time() - state["failed_at"] < cooldown_s:
                    # the stream failed lately: fallbacks first, the primary's batch call last
                    await utterance.audio_done.wait()
                    utterance.result = await _failover(utterance, None)
                    flush()
                    return
                try:
                    job = asyncio.ensure_future(
                        recognize(audio_of(utterance), lambda text: on_partial(utterance, text))
                    )
                    try:
                        ended = asyncio.ensure_future(utterance.audio_done.wait())
                        await asyncio.wait({job, ended}, return_when=asyncio.FIRST_COMPLETED)
                        ended.cancel()
                        try:
                            result = await asyncio.wait_for(job, final_timeout_s)
                        except TimeoutError:
                            raise TimeoutError(
                                f"{name}: no final result within {final_timeout_s:g} s after the end of audio"
                            ) from None
                    finally:
                        job.cancel()
                    utterance.result = _final(
                        utterance, result, name, config.fixed_language, config.word_timestamps
                    )
                    state["failed_at"] = -1e18
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not isinstance(exc, FAILURES):
                        ctx.log.exception("streaming engine crashed", provider=name)
                    state["failed_at"] = loop.time()
                    await utterance.audio_done.wait()
                    utterance.result = await _failover(utterance, exc)
                flush()

            async def _failover(utterance: _Utterance, exc: Exception | None) -> FinalTranscript | ErrorEvent:
                failures = [] if exc is None else [_describe(name, exc)]
                if failures:
                    ctx.log.warning("utterance failed", provider=name, error=failures[0])
                samples = np.concatenate(utterance.chunks) if utterance.chunks else np.zeros(0, np.float32)
                timeout = limits.provider_timeout_s * max(1.0, (utterance.end - utterance.start) / 30.0)
                for provider in fallbacks if exc is not None else (*fallbacks, primary):
                    try:
                        result = await asyncio.wait_for(
                            provider.transcribe(samples, **config.decode_options()),
                            timeout,
                        )
                    except FAILURES as failure:
                        failures.append(_describe(provider.name, failure))
                        continue
                    if provider is primary:
                        state["failed_at"] = -1e18
                    return _final(
                        utterance, result, provider.name, config.fixed_language, config.word_timestamps
                    )
                return ErrorEvent(
                    code="provider_failed",
                    message="; ".join(failures),
                    fatal=False,
                    segment_id=utterance.segment_id,
                )

            def open_utterance(chunk: AudioChunk) -> _Utterance:
                state["ids"] += 1
                utterance = _Utterance(state["ids"], chunk.start, chunk.start, keep_audio=bool(fallbacks))
                ctx.pending.acquire()
                order.append(utterance)
                utterance.task = loop.create_task(run(utterance))
                state["current"] = utterance
                return utterance

            def end_utterance() -> None:
                current: _Utterance | None = state["current"]
                if current is not None:
                    current.close()
                    state["current"] = None

            def on_next(frame: Frame) -> None:
                try:
                    if isinstance(frame, AudioChunk):
                        if state["speech"] and len(frame.samples):
                            current = state["current"] or open_utterance(frame)
                            current.add(frame)
                            if current.end - current.start >= max_len:
                                end_utterance()  # force-split; the next chunk opens the next one
                        return
                    if isinstance(frame, SpeechStarted):
                        state["speech"] = True
                    elif isinstance(frame, SpeechEnded):
                        state["speech"] = not config.vad.enabled
                        end_utterance()
                    emit(frame)
                except Exception as exc:  # never let an exception escape on_next
                    emit(ErrorEvent("provider_failed", f"{name}: {type(exc).__name__}: {exc}"))

            def on_completed() -> None:
                end_utterance()
                flags["completed"] = True
                flush()

            def on_error(exc: Exception) -> None:
                dispose()
                observer.on_error(exc)

            subscription = source.subscribe(on_next, on_error, on_completed, scheduler=scheduler)

            def dispose() -> None:
                flags["disposed"] = True
                subscription.dispose()
                for utterance in order:
                    utterance.close()
                    if utterance.task is not None:
                        utterance.task.cancel()
                order.clear()

            return Disposable(dispose)

        return reactivex.create(subscribe)

    return stage


def _final(
    utterance: _Utterance, result: Transcription, provider: str, language: str | None, with_words: bool
) -> FinalTranscript:
    words = None
    if with_words and result.words:
        words = tuple(
            replace(w, start=round(utterance.start + w.start, 3), end=round(utterance.start + w.end, 3))
            for w in result.words
        )
    return FinalTranscript(
        segment_id=utterance.segment_id,
        text=result.text.strip(),
        start=utterance.start,
        end=utterance.end,
        provider=provider,
        language=result.language or language,
        words=words,
    )


def _describe(name: str, exc: BaseException) -> str:
    message = str(exc) or type(exc).__name__
    return message if message.startswith(f"{name}:") else f"{name}: {message}"
