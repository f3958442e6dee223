"""``segment``: the batcher for batch engines — speech audio → one Segment per utterance.

::

    in:   --S--a--a--a--a--E---S-a-E--|           S/E = SpeechStarted/SpeechEnded, a = AudioChunk
    out:  --S--------p-----F1E---S---E--|         p = Segment(1, final=False) snapshot,
                                                  F1 = Segment(1, final=True); the short one is dropped

* VAD mode (``window_s`` is None): the audio between SpeechStarted and SpeechEnded is one
  utterance; its final Segment is emitted *before* the SpeechEnded event that closes it.
* Window mode (``window_s`` set, VAD off): all audio is cut into windows of ``window_s`` (split
  like an over-long utterance, below); no speech events are made.
* Both modes: an utterance reaching ``max_s`` is force-split (a final Segment, and a new
  utterance continues with the next sample). With ``split_search_s`` the cut is made at the
  quietest 20 ms of the utterance's last ``split_search_s`` seconds — between words, not through
  one — and the audio after it opens the next utterance; without it, exactly at ``max_s``.
  Nothing is lost or repeated either way. A gap in stream time (a chunk that starts more
  than 10 ms after the previous one ended, as when a wake gate dropped audio) closes the current
  one. Pieces shorter than ``min_s`` are dropped without a Segment (the events still flow).
* ``partial_interval_s``: every that many seconds of stream time of a growing utterance (once it
  is at least ``min_s`` long, so a snapshot always gets its final), a Segment(final=False) snapshot
  of the audio so far, with the id its final will carry — when sound arrived since the previous
  one: a chunk no more than 20 dB (``QUIET``) below the utterance's loudest chunk so far (RMS).
  Audio that only adds quiet (a pause, the VAD's hangover before the final) makes no snapshot,
  so no partial decode competes with the final that follows; the next loud chunk makes one at
  once.
* ``partials``: whether snapshots are made at all (``partial_interval_s`` is the interval when
  they are). A ``session.updated`` frame (live reconfiguration) turns them on or off from the
  next snapshot on, by its config's ``partials``.
* Early finals: a ``SpeechPaused`` hint (from ``vad_gate``) inside an utterance of at least
  ``min_s`` becomes a ``Segment(final=False, speculative=True)`` of the audio so far (the hint
  itself is consumed). The final Segment of an utterance closed by ``SpeechEnded`` carries
  ``voiced_end`` (the event's ``t``), so the stage can tell whether a speculative decode covered
  all the speech.
* ``segment_id`` counts emitted utterances from 1 per session; ``start``/``end`` are the stream
  times of the first sample and just after the last. AudioChunks are consumed (they live on inside
  Segments); every other frame passes through in order. Completion flushes the open utterance.

Bound: an utterance keeps its chunk arrays in a list (nothing is preallocated; an idle session
holds no audio) and never grows past ``max_s``; snapshots replace the list by their one array.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from reactivex import Observable, abc

from asrhub.flow import Stage
from asrhub.frames import (
    AudioChunk,
    Frame,
    Samples,
    Segment,
    SessionUpdated,
    SpeechEnded,
    SpeechPaused,
    SpeechStarted,
)
from asrhub.pcm import quietest_cut
from asrhub.plugin import Operator

GAP_S = 0.010
QUIET = 0.1
"""A chunk whose RMS is below this share of the utterance's loudest chunk (-20 dB) adds no sound
worth a new partial."""


def segment(
    *,
    max_s: float = 30.0,
    min_s: float = 0.25,
    window_s: float | None = None,
    partial_interval_s: float | None = None,
    split_search_s: float = 0.0,
    partials: bool = True,
) -> Operator:
    cut_s = min(max_s, window_s) if window_s is not None else max_s

    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: Any = None) -> abc.DisposableBase:
            parts: list[Samples] = []
            rate = n = 0
            start = end = 0.0
            interval = partial_interval_s if partials else None
            next_partial = interval or 0.0
            open_ = window_s is not None  # window mode: always collecting
            last_id = 0
            current_id: int | None = None
            loudest = 0.0  # RMS of the utterance's loudest chunk (while partials are made)
            fresh = False  # a chunk near it arrived since the last snapshot

            def snapshot() -> Samples:
                nonlocal parts
                samples = parts[0] if len(parts) == 1 else np.concatenate(parts)
                parts = [samples]
                return samples

            def close(voiced_end: float | None = None) -> None:
                """Emit the collected audio as a final Segment (if long enough), start empty."""
                nonlocal parts, n, current_id, next_partial, last_id, loudest
                if n and n / rate >= min_s:
                    if current_id is None:
                        last_id += 1
                        current_id = last_id
                    end_t = start + n / rate
                    seg = Segment(current_id, snapshot(), rate, start, end_t, voiced_end=voiced_end)
                    observer.on_next(seg)
                parts, n, current_id, next_partial, loudest = [], 0, None, interval or 0.0, 0.0

            def split() -> None:
                """The utterance reached the cut length: close it, at its quietest recent point
                if asked to, and carry the rest into the next one."""
                nonlocal parts, n, start
                if not split_search_s:
                    close()
                    return
                samples = snapshot()
                k = quietest_cut(samples, rate, split_search_s)
                rest, rest_start = samples[k:], start + k / rate
                parts, n = [samples[:k]], k
                close()
                if len(rest):
                    parts, n, start = [rest], len(rest), rest_start

            def add(chunk: AudioChunk) -> None:
                nonlocal rate, n, start, end, current_id, next_partial, last_id, loudest, fresh
                if n and (chunk.start > end + GAP_S or chunk.sample_rate != rate):
                    close()
                x, at = chunk.samples, chunk.start
                if interval and len(x):
                    level = float(np.sqrt(np.mean(np.square(x, dtype=np.float32))))
                    loudest = max(loudest, level)
                    fresh = fresh or level >= QUIET * loudest
                while len(x):
                    if not n:
                        rate, start = chunk.sample_rate, at
                    take = min(len(x), max(1, round(cut_s * rate) - n))
                    parts.append(x[:take])
                    n += take
                    x, at = x[take:], at + take / rate
                    if n >= round(cut_s * rate):
                        split()
                    elif interval and fresh and n / rate >= max(next_partial, min_s):
                        fresh = False
                        if current_id is None:
                            last_id += 1
                            current_id = last_id
                        observer.on_next(
                            Segment(current_id, snapshot(), rate, start, start + n / rate, False)
                        )
                        while next_partial <= n / rate:
                            next_partial += interval
                end = chunk.end

            def speculate() -> None:
                """A pause: the audio so far, for an early final decode."""
                nonlocal current_id, last_id
                if window_s is None and open_ and n and n / rate >= min_s:
                    if current_id is None:
                        last_id += 1
                        current_id = last_id
                    end_t = start + n / rate
                    seg = Segment(current_id, snapshot(), rate, start, end_t, False, speculative=True)
                    observer.on_next(seg)

            def on_next(frame: Frame) -> None:
                nonlocal open_, interval
                try:
                    if isinstance(frame, SessionUpdated) and frame.settings is not None:
                        interval = partial_interval_s if frame.settings.partials else None
                    if isinstance(frame, AudioChunk):
                        if open_:
                            add(frame)
                        return
                    if isinstance(frame, SpeechPaused):
                        speculate()
                        return
                    if window_s is None and isinstance(frame, SpeechStarted):
                        close()
                        open_ = True
                    elif window_s is None and isinstance(frame, SpeechEnded):
                        close(frame.t)
                        open_ = False
                    observer.on_next(frame)
                except Exception as exc:
                    observer.on_error(exc)

            def on_completed() -> None:
                close()
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Stage(subscribe)

    return operator
