"""The streaming provider stage for Vosk: audio chunks in, revisions and finals out.

::

    in : --a--a--a--a--a--E--a--a--|         a = AudioChunk   E = vad.speech_ended
    out: -----P-----P------E-F-----P--F|      P = transcript.partial (only when the text changes)
                                              F = transcript.final at a Vosk endpoint, at
                                                  vad.speech_ended and at the end of the stream

One ``KaldiRecognizer`` per session, from the provider's shared model. Frames wait in a
per-session serial queue drained by one task, whose recognizer calls run in the provider's
shared pool: a session's audio is recognised in order, sessions in parallel; every other frame
waits behind the audio before it and leaves in order. Word times are mapped from the
recognizer's clock back to stream time (:mod:`.vosk_timeline`). Segment ids count finals from
1, as ``segment`` does. A final is emitted when it has text, or when a partial of it was shown.

Backpressure, as every engine stage: ``ctx.pending`` counts *utterances* (from the first audio
after ``vad.speech_started`` to the recognition of its ``vad.speech_ended``), so
``limits.max_pending_segments`` means the same here as for batch engines; and while
``max_waiting_s`` of audio waits for the recognizer the session's ``feed`` waits too
(``pending.hold``) — audio is never dropped. One recognizer call takes at most ``BATCH_S`` of
audio, so partials keep coming when the recognizer is behind.

If the recognizer fails (an exception, or no answer within ``limits.provider_timeout_s``), the
rest of that utterance is only collected; at its end (``vad.speech_ended``, the stream's end,
or ``limits.max_utterance_s``) its audio goes through the core's
:func:`~asrhub.engine.failover.failover` over the fallbacks, and the final names the one that served
it — or one ``provider_failed`` error if none could. The next utterance starts on a fresh
recognizer; while Vosk's shared circuit breaker is open (:mod:`asrhub.engine.breaker`) utterances go
to the fallbacks directly. Frames and completion go through the core's ordered stage
(:mod:`asrhub.engine.ordered`): an exception never escapes, it fails one utterance.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from functools import partial
from typing import Any, Protocol

from asrhub.engine.failover import AllFailed, call_timeout, describe, failover
from asrhub.engine.finals import final_event
from asrhub.engine.inference_pool import InferencePool
from asrhub.engine.ordered import Ordered, engine_stage
from asrhub.frames import (
    TARGET_RATE,
    AudioChunk,
    ErrorEvent,
    Frame,
    PartialTranscript,
    SessionUpdated,
    SpeechEnded,
    Word,
)
from asrhub.pcm import float_to_pcm16
from asrhub.plugin import Operator, Provider, SessionContext, Transcription

from .vosk_model import VoskSettings, words_of
from .vosk_timeline import Timeline


class VoskEngine(Provider, Protocol):
    """The Vosk provider (``providers/vosk.py``) as its stage sees it."""

    settings: VoskSettings
    language: str | None

    def recognizer(self, sample_rate: int = TARGET_RATE) -> Any:
        """A new ``KaldiRecognizer`` on the provider's shared model (blocking)."""

    def ready(self) -> InferencePool:
        """The provider's worker pool (raises ``ProviderError`` before it started)."""


_END = object()
BATCH_S = 0.5
"""Audio of one session handed to the recognizer in one pool call, at most."""
_RELEASE = object()
"""Queued after an utterance's ``vad.speech_ended``: its ``ctx.pending`` slot is freed once the
recognizer got that far."""


class _Rec:
    """A recognizer and its clock origin (the stream offset, in samples, it started at)."""

    def __init__(self, provider: VoskEngine, rate: int, base: int) -> None:
        self.rec = provider.recognizer(rate)
        self.base = base
        self.last_partial = ""


def vosk_stage(provider: VoskEngine, ctx: SessionContext, fallbacks: tuple[Provider, ...] = ()) -> Operator:
    return engine_stage(ctx, provider.name, lambda out: _Stream(provider, ctx, fallbacks, out))


class _Stream:
    def __init__(
        self, provider: VoskEngine, ctx: SessionContext, fallbacks: tuple[Provider, ...], out: Ordered
    ) -> None:
        self.provider, self.ctx, self.fallbacks, self.out = provider, ctx, fallbacks, out
        self.config = ctx.config
        """The config of the results being emitted: a ``session.updated`` frame changes it when
        it leaves the stage, in order, so what was recognised before it keeps the old one."""
        self.loop = asyncio.get_running_loop()
        self.queue: deque[Any] = deque()
        self.drainer: asyncio.Task[None] | None = None
        self.rec: _Rec | None = None
        self.failed: str | None = None  # why the recognizer of this utterance failed
        self.time = Timeline(ctx.limits.max_utterance_s)
        self.fed_out = 0  # samples handed to the recognizer (or collected after a failure)
        self.rescued = 0  # audio before this offset went to a fallback already
        self.segment_id = 1
        self.speaking = False  # an utterance holds a pending slot (input side)
        self.waiting_s = 0.0  # audio queued for the recognizer
        self.shown = False
        self.done = False

    # ------------------------------------------------------------------ upstream (event loop)
    def on_next(self, frame: Frame) -> None:
        if self.done:
            return
        if isinstance(frame, AudioChunk):
            if not self.speaking:
                self.speaking = True
                self.ctx.pending.acquire()
            self.time.add(frame)
            self.enqueue(frame)
            self.waiting_s += frame.duration
            if self.waiting_s >= self.provider.settings.max_waiting_s:
                self.ctx.pending.hold("vosk")  # feed waits until the recognizer catches up
            return
        if self.drainer is None and not self.queue and not isinstance(frame, SpeechEnded):
            self.pass_on(frame)  # nothing ahead of it: no need to wait
        else:
            self.enqueue(frame)
        if isinstance(frame, SpeechEnded) and self.speaking:
            self.speaking = False
            self.enqueue(_RELEASE)

    def on_completed(self) -> None:
        if not self.done:
            if self.speaking:
                self.speaking = False
                self.enqueue(_RELEASE)
            self.enqueue(_END)

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
        while self.queue and not self.done:
            batch, audio_s = [], 0.0
            while self.queue and audio_s < BATCH_S:
                item = self.queue.popleft()
                batch.append(item)
                if isinstance(item, AudioChunk):
                    audio_s += item.duration
            self.waiting_s = max(0.0, self.waiting_s - audio_s)
            if self.waiting_s < self.provider.settings.max_waiting_s:
                self.ctx.pending.unhold("vosk")
            try:
                results = await self.recognize(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here fails this utterance, not the session
                self.ctx.log.exception("vosk stage failed", segment_id=self.segment_id)
                self.rec, self.failed = None, None
                results = [("error", describe(self.provider.name, exc), self.fed_out)]
                results += [("release", None, 0) for item in batch if item is _RELEASE]
                results += [("end", None, 0) for item in batch if item is _END]
            for kind, value, fed in results:
                if self.done:
                    return
                self.emit(kind, value, fed)
        self.drainer = None

    async def recognize(self, batch: list[Any]) -> list[tuple[str, Any, int]]:
        start = self.fed_out
        self.fed_out += sum(len(i.samples) for i in batch if isinstance(i, AudioChunk))
        breaker = self.ctx.breakers.of(self.provider)
        if self.failed is None and not breaker.usable:
            self.failed = breaker.why_open()
        if self.failed is None:
            try:
                if self.rec is None:
                    rate = self.time.rate or TARGET_RATE
                    self.rec = await asyncio.to_thread(_Rec, self.provider, rate, start)
                job = partial(work, self.rec, batch, start)
                results = await self.provider.ready().run(job, timeout=self.ctx.limits.provider_timeout_s)
            except Exception as exc:  # a failed or hung recognizer: collect, then fail over
                self.rec = None
                self.failed = describe(self.provider.name, exc, self.ctx.limits.provider_timeout_s)
                breaker.failed(self.failed)
                self.ctx.log.warning("provider failed", segment_id=self.segment_id, error=self.failed)
            else:
                breaker.succeeded()
                return results
        return await self.collect(batch, start)

    async def collect(self, batch: list[Any], fed: int) -> list[tuple[str, Any, int]]:
        """After a failure: frames pass, the utterance's end sends its audio to the fallbacks."""
        out: list[tuple[str, Any, int]] = []
        for item in batch:
            if isinstance(item, AudioChunk):
                fed += len(item.samples)
                if self.time.kept_s(fed) >= self.ctx.limits.max_utterance_s:
                    out.append(await self.rescue(fed))
            elif item is _RELEASE:
                out.append(("release", None, fed))
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
        config = self.config
        try:
            served = await failover(
                self.fallbacks,
                samples,
                breakers=self.ctx.breakers,
                timeout_s=call_timeout(self.ctx.limits.provider_timeout_s, len(samples) / TARGET_RATE),
                log=self.ctx.log,
                segment_id=self.segment_id,
                failures=failures,
                stats=self.ctx.stats,
                **config.decode_options(),
            )
        except AllFailed as exc:
            return "error", str(exc), until
        result = served.result
        words = tuple(result.words or ())
        return "fallback", (served.provider, result.text, result.language, words, origin), until

    # ------------------------------------------------------------------ results (event loop)
    def pass_on(self, frame: Frame) -> None:
        if isinstance(frame, SessionUpdated) and frame.settings is not None:
            self.config = frame.settings
        self.out.emit(frame)

    def emit(self, kind: str, value: Any, fed: int) -> None:
        if kind == "frame":
            self.pass_on(value)
        elif kind == "release":
            self.ctx.pending.release()
        elif kind == "partial":
            if value:
                self.shown = True
                self.out.emit(
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
            self.out.emit(ErrorEvent("provider_failed", value, False, self.segment_id))
            self.segment_id, self.shown = self.segment_id + 1, False
            self.time.forget(fed)
        elif kind == "end":
            self.done = True
            self.out.complete()

    def close_segment(
        self, text: str, provider: str, language: str | None, words: tuple[Word, ...], fed: int
    ) -> None:
        if text or self.shown:
            config = self.config
            self.out.emit(
                final_event(
                    self.segment_id,
                    Transcription(text, language, words),  # words already in stream time
                    provider=provider,
                    start=words[0].start if words else self.time.utterance_start(),
                    end=words[-1].end if words else self.time.at(fed),
                    words=config.word_timestamps,
                    language=config.fixed_language,
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
            if rec.rec.AcceptWaveform(float_to_pcm16(item.samples)):
                out.append(("final", (json.loads(rec.rec.Result()), rec.base), fed))
                rec.last_partial = ""
        elif item is _RELEASE:
            out.append(("release", None, fed))
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
