"""``wakeword``: openWakeWord (ONNX) on continuous 16 kHz audio, emitting ``wakeword.detected``.

Audio is re-framed into 80 ms steps (1280 samples) whatever the chunk sizes; each step adds 8
melspectrogram rows, one speech embedding and one score per wake word. A detection is emitted
when a score crosses ``threshold``, right after the chunk that completed that step, with ``t`` the
stream time at the end of the step. The same name fires again only once its score has fallen
below the threshold *and* ``refractory_s`` have passed, so one spoken "hey jarvis" is one event.
Every frame passes through untouched and in order; the detector never holds audio back::

    audio:   ─a─a─a─a─a─a─a─a─a─────|
    out:     ─a─a─a─a─a─aW─a─a─a────|      W = WakeWordDetected("hey_jarvis", 0.98, t)

The models (a :class:`~.wakeword_models.WakewordModels` shared by the sessions of a hub) are
loaded by the hub at start-up, so building the operator in ``hub.open`` only looks them up: an
unknown name or missing model files raise :class:`~asrhub.errors.HubError` there, so the
client's ``session.start`` is refused with a clear ``error`` before any audio flows.

Off the event loop (``off_loop=True``, as the hub wires it; needs a running loop): the
mel-spectrogram, embedding and wake models run in the loop's bounded default executor, one
batch of queued chunks (at most ``MAX_STEPS_PER_CALL`` steps' worth) per call, one call per
session at a time; frames leave in their order (a chunk, then the detections it completed; any
other frame waits behind the audio before it). While more than ``MAX_WAITING_S`` of audio waits,
the session's ``pending`` is held (``feed`` waits: backpressure). Without a running loop (a
marble test) the operator works inline, as described above.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np
import reactivex
from reactivex import Observable, abc

from asrhub.errors import HubError
from asrhub.flow import Pending
from asrhub.frames import TARGET_RATE, AudioChunk, Frame, WakeWordDetected
from asrhub.plugin import Operator

from .wakeword_models import (
    FRAME,
    MEL_CONTEXT,
    MEL_PER_FRAME,
    MEL_WINDOW,
    FeatureModels,
    WakeModel,
    WakewordModels,
)

MAX_STEPS_PER_CALL = 25
"""Steps (2 s of audio) computed in one batch; a larger chunk is processed in several."""
MAX_WAITING_S = 2.0
"""Audio of one session waiting for the detector off the loop; past it ``feed`` waits."""
WARMUP_STEPS = 5
"""Scores of the first steps are ignored while the feature history fills (as openWakeWord does)."""


class Detector:
    """One session's streaming state over the shared models (about 25 kB)."""

    def __init__(self, front: FeatureModels, models: list[WakeModel], threshold: float, refractory_s: float):
        self.front, self.models, self.threshold = front, models, threshold
        self.refractory = round(refractory_s * TARGET_RATE / FRAME)
        self.pending = np.zeros(0, np.float32)
        self.context = np.zeros(0, np.float32)
        self.mel = np.ones((MEL_WINDOW, 32), np.float32)
        self.history = max(m.window for m in models)
        self.features = np.array(front.initial[-self.history :])
        self.steps = 0
        self.origin: float | None = None
        self.last_fired: dict[str, int | None] = {m.name: None for m in models}
        self.above = {m.name: False for m in models}

    def feed(self, chunk: AudioChunk) -> list[WakeWordDetected]:
        """Add audio; returns the detections of the steps it completed, in stream order."""
        out = []
        for step, name, score in self.scores(chunk):
            event = self._check(step, name, score) if step > WARMUP_STEPS else None
            if event is not None:
                out.append(event)
        return out

    def scores(self, chunk: AudioChunk) -> Iterator[tuple[int, str, float]]:
        """Add audio; yields (step number, name, score) for every 80 ms step it completed."""
        if self.origin is None:
            self.origin = chunk.start
        scaled = np.clip(np.round(chunk.samples * 32767.0), -32768.0, 32767.0).astype(np.float32)
        self.pending = np.concatenate((self.pending, scaled))
        while len(self.pending) >= FRAME:
            k = min(len(self.pending) // FRAME, MAX_STEPS_PER_CALL)
            block, self.pending = self.pending[: k * FRAME], self.pending[k * FRAME :].copy()
            rows = self.front.mel(np.concatenate((self.context, block)))
            self.context = block[-MEL_CONTEXT:].copy()
            mel = np.concatenate((self.mel, rows))
            ends = [len(mel) - MEL_PER_FRAME * i for i in range(k - 1, -1, -1)]
            self.mel = mel[-MEL_WINDOW:].copy()
            features = np.concatenate(
                (self.features, self.front.embed(np.stack([mel[e - MEL_WINDOW : e] for e in ends])))
            )
            self.features = features[-self.history :].copy()
            for i in range(k):
                self.steps += 1
                upto = len(features) - (k - 1 - i)
                for model in self.models:
                    yield self.steps, model.name, model.score(features[upto - model.window : upto])

    def _check(self, step: int, name: str, score: float) -> WakeWordDetected | None:
        above, self.above[name] = self.above[name], score >= self.threshold
        last = self.last_fired[name]
        if score < self.threshold or above or (last is not None and step - last < self.refractory):
            return None
        self.last_fired[name] = step
        t = (self.origin or 0.0) + step * FRAME / TARGET_RATE
        return WakeWordDetected(name=name, score=round(score, 4), t=round(t, 6))


def wakeword(
    *,
    names: tuple[str, ...] | list[str],
    threshold: float = 0.5,
    refractory_s: float = 1.5,
    off_loop: bool = False,
    pending: Pending | None = None,
    models: WakewordModels | None = None,
) -> Operator:
    """Detect wake words in 16 kHz audio. ``models``: the hub's shared models (None: a set of
    this operator's own, loaded now). Raises HubError for unknown names or missing models."""
    if not 0.0 <= threshold <= 1.0:
        raise HubError("bad_message", f"wake-word threshold must be in [0, 1], got {threshold}", fatal=True)
    models = models or WakewordModels()
    wake = models.wake(tuple(names))
    front = models.features()

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None) -> Any:
            detector = Detector(front, wake, threshold, refractory_s)
            try:
                loop = asyncio.get_running_loop() if off_loop else None
            except RuntimeError:
                loop = None
            if loop is not None:
                serial = _OffLoop(detector, observer, pending)
                sub = source.subscribe(
                    serial.on_next, serial.on_error, serial.on_completed, scheduler=scheduler
                )

                def dispose() -> None:
                    serial.dispose()
                    sub.dispose()

                return reactivex.disposable.Disposable(dispose)

            def on_next(frame: Frame) -> None:
                if not isinstance(frame, AudioChunk):
                    observer.on_next(frame)
                    return
                if frame.sample_rate != TARGET_RATE:
                    observer.on_error(_wrong_rate(frame))
                    return
                try:
                    events = detector.feed(frame)
                except Exception as exc:  # an engine fault: the session cannot be wake-gated any more
                    observer.on_error(_failed(exc))
                    return
                observer.on_next(frame)
                for event in events:
                    observer.on_next(event)

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return reactivex.create(subscribe)

    return operator


def _wrong_rate(frame: AudioChunk) -> HubError:
    return HubError(
        "bad_audio", f"wakeword needs {TARGET_RATE} Hz audio, got {frame.sample_rate} Hz", fatal=True
    )


def _failed(exc: Exception) -> HubError:
    return HubError("provider_failed", f"wake-word detection failed: {exc}", fatal=True)


_END = object()


class _OffLoop:
    """One session's detector run in worker threads, its frames kept in order."""

    def __init__(
        self, detector: Detector, observer: abc.ObserverBase[Frame], pending: Pending | None
    ) -> None:
        self.detector, self.observer, self.pending = detector, observer, pending
        self.queue: deque[Any] = deque()
        self.waiting_s = 0.0
        self.drainer: asyncio.Task[None] | None = None
        self.done = False

    def on_next(self, frame: Frame) -> None:
        if self.done:
            return
        if isinstance(frame, AudioChunk):
            if frame.sample_rate != TARGET_RATE:
                self.fail(_wrong_rate(frame))
                return
            self.waiting_s += frame.duration
            if self.pending is not None and self.waiting_s >= MAX_WAITING_S:
                self.pending.hold("wakeword")
        elif self.drainer is None and not self.queue:
            self.observer.on_next(frame)  # nothing ahead of it
            return
        self.enqueue(frame)

    def on_completed(self) -> None:
        if not self.done:
            self.enqueue(_END)

    def on_error(self, exc: Exception) -> None:
        self.fail(exc)

    def fail(self, exc: Exception) -> None:
        self.dispose()
        self.observer.on_error(exc)

    def dispose(self) -> None:
        self.done = True
        self.queue.clear()
        if self.pending is not None:
            self.pending.unhold("wakeword")
        if self.drainer is not None:
            self.drainer.cancel()

    def enqueue(self, item: Any) -> None:
        self.queue.append(item)
        if self.drainer is None:
            self.drainer = asyncio.get_running_loop().create_task(self.drain())

    async def drain(self) -> None:
        while self.queue and not self.done:
            if not isinstance(self.queue[0], AudioChunk):
                item = self.queue.popleft()
                if item is _END:
                    self.done = True
                    self.observer.on_completed()
                    return
                self.observer.on_next(item)
                continue
            batch: list[AudioChunk] = []
            samples = 0
            while (
                self.queue and isinstance(self.queue[0], AudioChunk) and samples < MAX_STEPS_PER_CALL * FRAME
            ):
                batch.append(self.queue.popleft())
                samples += len(batch[-1].samples)
            self.waiting_s = max(0.0, self.waiting_s - samples / TARGET_RATE)
            if self.pending is not None and self.waiting_s < MAX_WAITING_S:
                self.pending.unhold("wakeword")
            try:
                results = await asyncio.to_thread(_feed_all, self.detector, batch)
            except Exception as exc:  # an engine fault: the session cannot be wake-gated any more
                if not self.done:
                    self.fail(_failed(exc))
                return
            if self.done:
                return
            for chunk, events in zip(batch, results, strict=True):
                self.observer.on_next(chunk)
                for event in events:
                    self.observer.on_next(event)
        self.drainer = None


def _feed_all(detector: Detector, batch: list[AudioChunk]) -> list[list[WakeWordDetected]]:
    """Runs in a worker thread: the detections each chunk completed."""
    return [detector.feed(chunk) for chunk in batch]
