"""``speaker_labels``: live diarization around the engine stage — every final gets its speaker.

::

    in:   --S--a--a--a--E-----S--a--a--E--|     S/E = vad events, a = speech AudioChunk
    inner:                 --F1----------F2--|  the wrapped stage's output (finals, partials, …)
    out:                   --F1(0)-------F2(1)--|   each final (and its words) with a speaker

* An utterance's voices (:meth:`asrhub.diarize.diarizer.Diarizer.voices`: segmentation-3.0 finds
  where the voice changes, even without a pause; each voice is embedded) start in a worker
  thread of the loop's default executor when the VAD closes it (``vad.speech_ended``), so they
  are found while the engine decodes; a final that is not one whole VAD utterance (a part of a
  force-split one, VAD off, a streaming engine's own endpoint) starts a job on the kept audio of
  its own times when it arrives: that final waits for it.
* Labels come from a :class:`~asrhub.diarize.tracker.SpeakerTracker` (each utterance clustered
  with the session's earlier ones, at most ``max_speakers``), made per subscription: stable for
  the session; each voice of an utterance gets one. With a ``memory`` (the session's
  :class:`~asrhub.diarize.tracker.SpeakerMemory`) the tracker is the memory's for the chain
  ``name``: its state goes into the session's resume record, and a session resumed on another
  node starts from it (speaker 0 stays speaker 0). Each word takes the label of the voice it
  overlaps most, the final the label of the voice that fills most of its time (so one final can
  carry two people's words). Several finals of one utterance (a force-split) share its labels.
* Output order is kept: a final whose embedding is not done yet holds it and everything after it,
  so a final waits at most for its own utterance's segmentation and embeddings
  (docs/benchmarks.md). An utterance without speech for the encoder gets the previous speaker.

Bounds: the audio kept is the last ``keep_s`` seconds of speech chunks; at most
:data:`MAX_UTTERANCES` utterances' jobs are remembered (older ones are forgotten, their finals
long gone).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import reactivex
from reactivex import Observable, abc
from reactivex.subject import Subject

from asrhub.diarize.diarizer import Voice
from asrhub.diarize.tracker import SpeakerMemory, SpeakerTracker
from asrhub.frames import AudioChunk, FinalTranscript, Frame, SpeechEnded, SpeechStarted, Word
from asrhub.plugin import Operator

MAX_UTTERANCES = 16
MATCH_S = 0.35
"""A final whose start and end are both this close to a VAD utterance's is that utterance."""
Voices = Callable[[npt.NDArray[np.float32]], list[Voice]]


@dataclass
class _Utterance:
    start: float
    end: float
    job: asyncio.Future[Any] | None = None
    voices: list[Voice] | None = None
    done: bool = False
    labels: list[int] | None = None
    final_start: float | None = None
    final_end: float | None = None


def speaker_labels(
    inner: Operator,
    *,
    voices: Voices,
    threshold: float,
    max_speakers: int,
    keep_s: float = 65.0,
    memory: SpeakerMemory | None = None,
    name: str = "",
) -> Operator:
    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(
            observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if memory is None:
                tracker = SpeakerTracker(threshold=threshold, max_speakers=max_speakers)
            else:
                tracker = memory.tracker(name, threshold=threshold, max_speakers=max_speakers)
            audio: deque[AudioChunk] = deque()
            kept = [0]
            utterances: deque[_Utterance] = deque()
            held: deque[Frame] = deque()
            state: dict[str, Any] = {
                "opened": None,
                "last": None,
                "completed": False,
                "stopped": False,
                "pumping": False,
            }
            try:
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            inside: Subject[Frame] = Subject()

            def samples_between(start: float, end: float) -> npt.NDArray[np.float32]:
                parts = []
                for chunk in audio:
                    rate = chunk.sample_rate
                    a = max(0, round((start - chunk.start) * rate))
                    b = min(len(chunk.samples), round((end - chunk.start) * rate))
                    if b > a:
                        parts.append(chunk.samples[a:b])
                return np.concatenate(parts) if parts else np.zeros(0, np.float32)

            def start_job(u: _Utterance) -> None:
                samples = samples_between(u.start, u.end)

                def finish(found: list[Voice]) -> None:
                    u.voices, u.done = found, True
                    pump()

                if loop is None:
                    finish(_safe(voices, samples))
                    return
                u.job = loop.run_in_executor(None, _safe, voices, samples)
                u.job.add_done_callback(lambda f: finish([] if f.cancelled() else f.result()))

            def remember(u: _Utterance) -> None:
                utterances.append(u)
                while len(utterances) > MAX_UTTERANCES:
                    old = utterances.popleft()
                    if old.job is not None and not old.done:
                        old.job.cancel()

            def on_input(frame: Frame) -> None:
                if isinstance(frame, AudioChunk):
                    audio.append(frame)
                    kept[0] += len(frame.samples)
                    while audio and kept[0] - len(audio[0].samples) >= keep_s * frame.sample_rate:
                        kept[0] -= len(audio.popleft().samples)
                elif isinstance(frame, SpeechStarted):
                    state["opened"] = frame.t
                elif isinstance(frame, SpeechEnded) and state["opened"] is not None:
                    u = _Utterance(state["opened"], frame.t)
                    state["opened"] = None
                    remember(u)
                    start_job(u)
                inside.on_next(frame)

            def utterance_of(final: FinalTranscript) -> _Utterance:
                """The VAD utterance this final is (its embedding started at ``speech_ended``), or
                a job of its own on the kept audio of its times (a part of an utterance, or no VAD)."""
                for u in utterances:
                    if abs(u.start - final.start) <= MATCH_S and abs(u.end - final.end) <= MATCH_S:
                        return u
                    if u.final_start == final.start and u.final_end == final.end:
                        return u
                mine = _Utterance(final.start, final.end, final_start=final.start, final_end=final.end)
                remember(mine)
                start_job(mine)
                return mine

            def labelled(final: FinalTranscript, u: _Utterance) -> FinalTranscript:
                found = u.voices or []
                if u.labels is None:
                    last = state["last"] if state["last"] is not None else 0
                    u.labels = [tracker.label(v.embedding) for v in found] or [last]

                def who(start: float, end: float) -> int:
                    assert u.labels is not None
                    if len(found) <= 1:
                        return u.labels[0]
                    a, b = start - u.start, end - u.start
                    best = max(found, key=lambda v: (v.overlap(a, b), -v.distance(a, b)))
                    return u.labels[found.index(best)]

                words: tuple[Word, ...] | None = None
                if final.words is not None:
                    words = tuple(replace(w, speaker=who(w.start, w.end)) for w in final.words)
                speaker = who(final.start, final.end)
                state["last"] = words[-1].speaker if words else speaker
                return replace(final, speaker=speaker, words=words)

            def pump() -> None:
                if state["pumping"]:
                    return  # a job finished inline, inside this loop: it goes on from here
                state["pumping"] = True
                try:
                    _pump()
                finally:
                    state["pumping"] = False

            def _pump() -> None:
                while held and not state["stopped"]:
                    frame = held[0]
                    if isinstance(frame, FinalTranscript):
                        u = utterance_of(frame)
                        if not u.done:
                            return  # its job's callback pumps again
                        held.popleft()
                        observer.on_next(labelled(frame, u))
                    else:
                        held.popleft()
                        observer.on_next(frame)
                if not held and state["completed"] and not state["stopped"]:
                    state["stopped"] = True
                    observer.on_completed()

            def on_output(frame: Frame) -> None:
                held.append(frame)
                pump()

            def on_completed() -> None:
                state["completed"] = True
                pump()

            def on_error(error: Exception) -> None:
                state["stopped"] = True
                observer.on_error(error)

            inner_sub = inside.pipe(inner).subscribe(on_output, on_error, on_completed, scheduler=scheduler)
            source_sub = source.subscribe(on_input, inside.on_error, inside.on_completed, scheduler=scheduler)

            def dispose() -> None:
                state["stopped"] = True
                source_sub.dispose()
                inner_sub.dispose()
                for u in utterances:
                    if u.job is not None and not u.done:
                        u.job.cancel()
                utterances.clear()
                audio.clear()
                held.clear()

            return reactivex.disposable.Disposable(dispose)

        return Observable(subscribe)

    return operator


def _safe(voices: Voices, samples: npt.NDArray[np.float32]) -> list[Voice]:
    """The voices, or none for audio the encoder cannot use (or a failure: the final is not
    lost for want of a label)."""
    if len(samples) < 1600:
        return []
    with contextlib.suppress(Exception):
        return voices(samples)
    return []
