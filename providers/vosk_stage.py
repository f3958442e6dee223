"""The streaming provider stage for Vosk: audio chunks in, revisions and finals out.

::

    in : --a--a--a--a--a--E--a--a--|         a = AudioChunk   E = vad.speech_ended
    out: -----P-----P------E-F-----P--F|      P = transcript.partial (only when the text changes)
                                              F = transcript.final at a Vosk endpoint, at
                                                  vad.speech_ended and at the end of the stream

One ``KaldiRecognizer`` per session, from the provider's shared model. Frames wait in a
per-session serial queue drained by one task, whose recognizer calls run in the provider's
shared pool, so a session's audio is recognised in order while sessions run in parallel; every
other frame is queued behind the audio before it and leaves in order. Each queued chunk holds
``ctx.pending`` until it has been recognised (``feed`` waits: backpressure); past ``max_queue``
chunks, audio is dropped with a non-fatal ``capacity`` error. Word times are mapped from the
recognizer's clock (samples it was fed) back to stream time. Segment ids count finals from 1
(as ``segment`` does). A final is emitted when it has text or when a partial of it was shown (to close it).
If the recognizer fails, the utterance's audio (kept up to ``limits.max_utterance_s``) goes to
the fallbacks' ``transcribe``; without one, a ``provider_failed`` error is emitted.
"""

from __future__ import annotations

import asyncio
import json
from bisect import bisect_right
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
    Event,
    FinalTranscript,
    Frame,
    PartialTranscript,
    Samples,
    SpeechEnded,
    Word,
)
from asrhub.provider import Provider

from .vosk import words_of

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
        self.rate = 0
        self.fed_in = 0  # samples queued so far (on the loop)
        self.fed_out = 0  # samples the recognizer has taken
        self.end_t = 0.0
        self.marks: list[tuple[int, float]] = []  # (offset, stream time) where the audio jumps
        self.audio: deque[tuple[int, Samples]] = deque()  # (offset, samples) since the last final
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
            self.rate = self.rate or frame.sample_rate
            self.ctx.pending.acquire()
            if not self.marks or abs(frame.start - self.end_t) > 1e-6:
                self.marks.append((self.fed_in, frame.start))
            self.audio.append((self.fed_in, frame.samples))
            while (
                len(self.audio) > 1
                and self.fed_in - self.audio[0][0] > self.ctx.limits.max_utterance_s * self.rate
            ):
                self.audio.popleft()
            self.fed_in += len(frame.samples)
            self.end_t = frame.end
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
        self.audio.clear()
        if self.drainer is not None:
            self.drainer.cancel()

    def enqueue(self, item: Any) -> None:
        self.queue.append(item)
        if self.drainer is None:
            self.drainer = self.loop.create_task(self.drain())

    # ------------------------------------------------------------------ the serial drain
    async def drain(self) -> None:
        try:
            await self._drain()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end the session, not stall it
            self.dispose()
            self.observer.on_error(exc)

    async def _drain(self) -> None:
        pool = self.provider.ready()
        while self.queue and not self.done:
            batch = list(self.queue)
            self.queue.clear()
            if self.rec is None:
                self.rec = await asyncio.to_thread(
                    _Rec, self.provider, self.rate or TARGET_RATE, self.fed_out
                )
            rec, start = self.rec, self.fed_out
            self.fed_out += sum(len(i.samples) for i in batch if isinstance(i, AudioChunk))
            try:
                results = await pool.run(
                    partial(work, rec, batch, start), timeout=self.ctx.limits.provider_timeout_s
                )
            except Exception as exc:  # a failed or hung recognizer: fail over, then start a new one
                self.rec = None
                results = await self.failover(batch, exc)
            for kind, value, fed in results:
                if self.done:
                    return
                self.emit(kind, value, fed)
            for item in batch:
                if isinstance(item, AudioChunk):
                    self.ctx.pending.release()
        self.drainer = None

    async def failover(self, batch: list[Any], exc: Exception) -> list[tuple[str, Any, int]]:
        reason = f"vosk: {type(exc).__name__}: {exc}".rstrip(": ")
        self.ctx.log.warning("provider failed", segment_id=self.segment_id, error=reason)
        samples = np.concatenate([a for _, a in self.audio]) if self.audio else np.zeros(0, np.float32)
        start = self.audio[0][0] if self.audio else self.fed_out
        failures = [reason]
        final: Any = None
        for provider in self.fallbacks:
            try:
                result = await asyncio.wait_for(
                    provider.transcribe(
                        samples, language=self.ctx.config.language, prompt=self.ctx.config.prompt
                    ),
                    self.ctx.limits.provider_timeout_s,
                )
            except Exception as err:
                failures.append(f"{provider.name}: {type(err).__name__}: {err}".rstrip(": "))
                continue
            words = tuple(Word(w.word, w.start, w.end, w.probability) for w in result.words or ())
            final = ("fallback", (provider.name, result.text, result.language, words, start), self.fed_out)
            break
        if final is None:
            final = ("error", "; ".join(failures), self.fed_out)
        out: list[tuple[str, Any, int]] = [("frame", i, self.fed_out) for i in batch if isinstance(i, Event)]
        out.append(final)
        if _END in batch:
            out.append(("end", None, self.fed_out))
        return out

    # ------------------------------------------------------------------ results (event loop)
    def emit(self, kind: str, value: Any, fed: int) -> None:
        if kind == "frame":
            self.observer.on_next(value)
        elif kind == "partial":
            if value:
                self.shown = True
                self.observer.on_next(
                    PartialTranscript(self.segment_id, value, self.utterance_start(), self.at(fed))
                )
        elif kind == "final":
            result, base = value
            name, language = self.provider.name, self.provider.language
            self.close_segment(
                result.get("text", ""), name, language, self.shift(words_of(result), base), fed
            )
        elif kind == "fallback":
            name, text, language, words, start = value
            self.close_segment(text, name, language, self.shift(words, start), fed)
        elif kind == "error":
            self.observer.on_next(ErrorEvent("provider_failed", value, False, self.segment_id))
            self.segment_id, self.shown = self.segment_id + 1, False
            self.forget(fed)
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
                    start=words[0].start if words else self.utterance_start(),
                    end=words[-1].end if words else self.at(fed),
                    provider=provider,
                    language=language or config.language,
                    words=words if config.word_timestamps else None,
                )
            )
            self.segment_id += 1
        self.shown = False
        self.forget(fed)

    def shift(self, words: tuple[Word, ...], origin: int) -> tuple[Word, ...]:
        """Words timed from the recognizer sample ``origin`` → stream time."""
        r = self.rate or TARGET_RATE
        return tuple(
            Word(w.word, self.at(origin + w.start * r), self.at(origin + w.end * r), w.probability)
            for w in words
        )

    def forget(self, fed: int) -> None:
        """Drop the audio and clock marks that only served the utterance that just ended."""
        while self.audio and self.audio[0][0] + len(self.audio[0][1]) <= fed:
            self.audio.popleft()
        i = bisect_right(self.marks, (fed, float("inf"))) - 1
        if i > 0:
            del self.marks[:i]

    def at(self, offset: float) -> float:
        """Stream time of the recognizer's sample ``offset``."""
        if not self.marks:
            return 0.0
        i = max(bisect_right(self.marks, (offset, float("inf"))) - 1, 0)
        mark, t = self.marks[i]
        return round(t + (offset - mark) / (self.rate or TARGET_RATE), 3)

    def utterance_start(self) -> float:
        return self.at(self.audio[0][0]) if self.audio else self.end_t


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
