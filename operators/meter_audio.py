"""``meter_audio``: decoded audio counted against the session's key, and cut at its quota.

::

    in (AudioChunk a_n, events e):   --a0--a1--e--a2--a3--a4--|
    quota ends inside a3:            --a0--a1--e--a2--a3'-----|     a3' = a3 up to the quota;
                                                                     a4 and later: dropped

Each chunk's duration goes to the session's :class:`~asrhub.usage.SessionMeter` (one float
addition; the meter credits the hub's counts once per second of audio, never per chunk). The
chunk that crosses the key's daily quota is cut at the sample where the quota ends, and no
audio passes after it: the meter tells the session, which completes its input, so the
utterance in flight is finalized from the audio that passed and the session ends with
``quota_exceeded`` (:class:`~asrhub.session.session.Session`). Other frames pass untouched.
Placed right after decoding and resampling: what is counted is decoded stream time. It reads
a chunk's ``duration``, never its ``samples``: a PCM chunk's float32 copy is made only when a
stage reads it (a VAD-only session never does), and counting must not make it. State: none of
its own (the meter is the session's).
"""

from __future__ import annotations

from reactivex import Observable, abc

from asrhub.flow import Stage
from asrhub.frames import AudioChunk, Frame
from asrhub.plugin import Operator
from asrhub.usage import SessionMeter


def meter_audio(meter: SessionMeter) -> Operator:
    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(
            observer: abc.ObserverBase[Frame], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            take = meter.take
            forward = observer.on_next

            def on_next(frame: Frame) -> None:
                if not isinstance(frame, AudioChunk):
                    forward(frame)
                    return
                seconds = frame.duration  # never frame.samples: a PCM chunk's float copy is lazy
                allowed = take(seconds)
                if allowed >= seconds:
                    forward(frame)
                    return
                keep = round(allowed * frame.sample_rate)
                if keep > 0:
                    forward(AudioChunk(frame.samples[:keep], frame.sample_rate, frame.start, frame.seq))

            return source.subscribe(on_next, observer.on_error, observer.on_completed, scheduler=scheduler)

        return Stage(subscribe)

    return operator
