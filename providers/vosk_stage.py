"""The streaming provider stage for Vosk: audio chunks in, revisions and finals out.

::

    in : --a--a--a--a--a--E--a--a--|         a = AudioChunk   E = vad.speech_ended
    out: -----P-----P------E-F-----P--F|      P = transcript.partial (only when the text changes)
                                              F = transcript.final at a Vosk endpoint, at
                                                  vad.speech_ended and at the end of the stream

One ``KaldiRecognizer`` per session, from the provider's shared model. Frames wait in a
per-session serial queue drained by one task, whose recognizer calls run in the provider's
shared pool: a session's audio is recognised in order, sessions in parallel; every other frame
waits behind the audio before it and leaves in order. Each queued chunk holds ``ctx.pending``
until it has been recognised (``feed`` waits: backpressure); past ``max_queue`` chunks, audio
is dropped with a non-fatal ``capacity`` error. Word times are mapped from the recognizer's
clock back to stream time (:mod:`.vosk_timeline`). Segment ids count finals from 1, as
``segment`` does. A final is emitted when it has text, or when a partial of it was shown.

If the recognizer fails (an exception, or no answer within ``limits.provider_timeout_s``), the
rest of that utterance is only collected; at its end (``vad.speech_ended``, the stream's end,
or ``limits.max_utterance_s``) its audio goes to the fallbacks' ``transcribe`` in order, and the
final names the one that served it — or one ``provider_failed`` error if none could. The next
utterance starts on a fresh recognizer.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from asrhub.frames import (
    TARGET_RATE,
    AudioChunk,
    ErrorEvent,
    FinalTranscript,
    Frame,
    PartialTranscript,
    SpeechEnded,
    Word,
)
from asrhub.provider import Provider

from .vosk import words_of
from .vosk_timeline import Timeline

if TYPE_CHECKING:
    from asrhub.pipeline import Operator, SessionContext

    from .vosk import VoskProvider

_END = object()


class _Rec:
    """A recognizer and its clock origin (the stream offset, in samples, it started at)."""

    def __init__(self, provider: VoskProvider, rate: int, base: int) -> None:
        self.rec = provider.recognizer(rate)
        self.base = base
        self.last_partial = ""


def vosk_stage(provider: VoskProvider, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            stream = _Stream(provider, ctx, fallbacks, observer)
            sub = source.subscribe(stream.on_next, stream.on_error, stream.on_completed, scheduler=scheduler)

            def dispose() -> None:
                stream.dispose()
                sub.dispose()

            return Disposable(dispose)

        return Observable(subscribe)

    return operator


class _Stream:
    def __init__(
        self, provider: VoskProvider, ctx: SessionContext, fallbacks: tuple[Provider, ...], observer: Any
    ) -> None:
        self.provider, self.ctx, self.fallbacks, self.observer = provider, ctx, fallbacks, observer
        self.loop = asyncio.get_running_loop()
        self.queue: deque[Any] = deque()
        self.drainer: asyncio.Task[None] | None = None
        self.rec: _Rec | None = None
        self.failed: str | None = None  # why the recognizer of this utterance failed
        self.time = Timeline(ctx.limits.max_utterance_s)
        self.fed_out = 0  # samples handed to the recognizer (or collected after a failure)
        self.rescued = 0  # audio before this offset went to a fallback already
        self.segment_id = 1
        self.shown = False
        self.done = False

    # ------------------------------------------------------------------ upstream (event loop)
    def on_next(self, frame: Frame) -> None:
        if self.done:
            return
        if isinstance(frame, AudioChunk):
            if len(self.queue) >= self.provider.settings.max_queue:
                message = f"vosk is behind: dropped {frame.duration:.2f} s of audio"
                self.observer.on_next(ErrorEvent("capacity", message))
                return
            self.ctx.pending.acquire()
            self.time.add(frame)
        elif self.drainer is None and not self.queue:
            self.observer.on_next(frame)  # nothing ahead of it: no need to wait
            return
        self.enqueue(frame)

    def on_completed(self) -> None:
        if not self.done:
            self.enqueue(_END)

    def on_error(self, exc: Exception) -> None:
        self.dispose()
        self.observer.on_error(exc)

    def dispose(self) -> None:
        self.done = True
        self.queue.clear()
        if self.drainer is not None:
            self.drainer.cancel()

    def enqueue(self, item: Any) -> None:
        self.queue.append(item)
        if self.drainer is None:
            self.drainer = self.loop.create_task(self.drain())

    # ------------------------------------------------------------------ the serial drain
    async def drain(self) -> None:
        try:
            while self.queue and not self.done:
                batch = list(self.queue)
                self.queue.clear()
                for kind, value, fed in await self.recognize(batch):
                    if self.done:
                        return
                    self.emit(kind, value, fed)
                for item in batch:
                    if isinstance(item, AudioChunk):
                        self.ctx.pending.release()
            self.drainer = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end the session, not stall it
            self.dispose()
            self.observer.on_error(exc)

    async def recognize(self, batch: list[Any]) -> list[tuple[str, Any, int]]:
        start = self.fed_out
        self.fed_out += sum(len(i.samples) for i in batch if isinstance(i, AudioChunk))
        if self.failed is None:
            try:
                if self.rec is None:
                    rate = self.time.rate or TARGET_RATE
                    self.rec = await asyncio.to_thread(_Rec, self.provider, rate, start)
                job = partial(work, self.rec, batch, start)
                return await self.provider.ready().run(job, timeout=self.ctx.limits.provider_timeout_s)
            except Exception as exc:  # a failed or hung recognizer: collect, then fail over
                self.rec = None
                self.failed = f"{self.provider.name}: {type(exc).__name__}: {exc}".rstrip(": ")
                self.ctx.log.warning("provider failed", segment_id=self.segment_id, error=self.failed)
        return await self.collect(batch, start)

    async def collect(self, batch: list[Any], fed: int) -> list[tuple[str, Any, int]]:
        """After a failure: frames pass, the utterance's end sends its audio to the fallbacks."""
        out: list[tuple[str, Any, int]] = []
        for item in batch:
            if isinstance(item, AudioChunk):
                fed += len(item.samples)
                if self.time.kept_s(fed) >= self.ctx.limits.max_utterance_s:
                    out.append(await self.rescue(fed))
            elif item is _END or isinstance(item, SpeechEnded):
                out += [("frame", item, fed)] if item is not _END else []
                if fed > self.rescued:
                    out.append(await self.rescue(fed))
                out += [("end", None, fed)] if item is _END else []
            else:
                out.append(("frame", item, fed))
        return out

    async def rescue(self, until: int) -> tuple[str, Any, int]:
        failures = [self.failed or "vosk failed"]
        self.failed = None  # the next utterance gets a fresh recognizer
        origin, samples = self.time.utterance(self.rescued, until)
        self.rescued = until
        config = self.ctx.config
        for provider in self.fallbacks:
            try:
                result = await asyncio.wait_for(
                    provider.transcribe(samples, **config.decode_options()),
                    self.ctx.limits.provider_timeout_s,
                )
            except Exception as err:
                failures.append(f"{provider.name}: {type(err).__name__}: {err}".rstrip(": "))
                continue
            words = tuple(result.words or ())
            return "fallback", (provider.name, result.text, result.language, words, origin), until
        return "error", "; ".join(failures), until

    # ------------------------------------------------------------------ results (event loop)
    def emit(self, kind: str, value: Any, fed: int) -> None:
        if kind == "frame":
            self.observer.on_next(value)
        elif kind == "partial":
            if value:
                self.shown = True
                self.observer.on_next(
                    PartialTranscript(self.segment_id, value, self.time.utterance_start(), self.time.at(fed))
                )
        elif kind == "final":
            result, base = value
            name, language = self.provider.name, self.provider.language
            self.close_segment(
                result.get("text", ""), name, language, self.time.shift(words_of(result), base), fed
            )
        elif kind == "fallback":
            name, text, language, words, start = value
            self.close_segment(text, name, language, self.time.shift(words, start), fed)
        elif kind == "error":
            self.observer.on_next(ErrorEvent("provider_failed", value, False, self.segment_id))
            self.segment_id, self.shown = self.segment_id + 1, False
            self.time.forget(fed)
        elif kind == "end":
            self.done = True
            self.observer.on_completed()

    def close_segment(
        self, text: str, provider: str, language: str | None, words: tuple[Word, ...], fed: int
    ) -> None:
        if text or self.shown:
            config = self.ctx.config
            self.observer.on_next(
                FinalTranscript(
                    segment_id=self.segment_id,
                    text=text,
                    start=words[0].start if words else self.time.utterance_start(),
                    end=words[-1].end if words else self.time.at(fed),
                    provider=provider,
                    language=language or config.fixed_language,
                    words=words if config.word_timestamps else None,
                )
            )
            self.segment_id += 1
        self.shown = False
        self.time.forget(fed)


def work(rec: _Rec, batch: list[Any], fed: int) -> list[tuple[str, Any, int]]:
    """Feed one batch of one session to its recognizer (runs in a pool thread)."""
    out: list[tuple[str, Any, int]] = []
    for item in batch:
        if isinstance(item, AudioChunk):
            fed += len(item.samples)
            if rec.rec.AcceptWaveform((np.clip(item.samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()):
                out.append(("final", (json.loads(rec.rec.Result()), rec.base), fed))
                rec.last_partial = ""
        elif item is _END or isinstance(item, SpeechEnded):
            if item is not _END:
                out.append(("frame", item, fed))
            out.append(("final", (json.loads(rec.rec.FinalResult()), rec.base), fed))
            rec.last_partial = ""
            if item is _END:
                out.append(("end", None, fed))
        else:
            out.append(("frame", item, fed))
    if batch and isinstance(batch[-1], AudioChunk):
        text = json.loads(rec.rec.PartialResult()).get("partial", "")
        if text != rec.last_partial:
            rec.last_partial = text
            out.append(("partial", text, fed))
    return out
