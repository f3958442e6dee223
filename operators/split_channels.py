"""``split_channels``: interleaved multi-channel PCM → one sub-pipeline per channel, merged back
into the one stream with every transcript/VAD/error event tagged with its ``channel``.

::

    RawAudio(L R L R …):  --[b1]------[b2]------------|
    channel 0 chain:        --(L…)------(L…)--f0-------|     decode → resample → VAD → engine → format
    channel 1 chain:        --(R…)------(R…)------f1---|
    out:                  ----------------f0{ch 0}-f1{ch 1}-|   completes when every channel has

* Input: ``pcm_s16le`` / ``pcm_f32le`` with the declared ``channels``, or ``wav`` (16-bit PCM or
  32-bit float; its header's channel count and rate win, as in ``decode``). Each RawAudio is cut
  into whole sample frames (a partial frame waits for the next one) and every channel gets its
  samples as mono RawAudio of the same encoding; its chain (built by ``build(i, mono_format)``
  when the format is known: at once for raw PCM, after the WAV header) is the mono chain of
  :func:`asrhub.wiring.build_pipeline` — its own decoder, VAD, engine stage (own segment ids,
  ordering and partials) and formatting. Finals of one channel keep their order; channels
  interleave as their engines answer.
* ``max_channels``: a WAV declaring more is a fatal ``bad_audio`` error (raw PCM is checked when
  the session opens). ``max_header_bytes`` bounds a WAV header as in ``decode``.
* Events that are not about one channel (``session.updated``, which every chain passes on) come
  once, from channel 0. An ``on_error`` of any chain ends the merged stream; disposing the
  operator disposes every chain.
* Cost: N decoders, VADs and engine streams — CPU and memory grow linearly with the channels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject

from asrhub.config import AudioFormat
from asrhub.flow import Stage
from asrhub.frames import (
    ErrorEvent,
    FinalTranscript,
    Frame,
    PartialTranscript,
    RawAudio,
    SessionUpdated,
    SpeechEnded,
    SpeechStarted,
)
from asrhub.plugin import Operator

from ._pcm import parse_wav_header

__all__ = ["split_channels"]

_TAGGED = (FinalTranscript, PartialTranscript, SpeechStarted, SpeechEnded, ErrorEvent)
_DTYPES = {"pcm_s16le": "<i2", "pcm_f32le": "<f4"}


def split_channels(
    fmt: AudioFormat,
    *,
    build: Callable[[int, AudioFormat], Operator],
    max_channels: int,
    max_header_bytes: int = 256 << 10,
) -> Operator:
    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: Any = None) -> abc.DisposableBase:
            state = _Split(fmt, build, max_channels, max_header_bytes, observer, scheduler)
            sub = source.subscribe(state.on_next, observer.on_error, state.on_completed, scheduler=scheduler)

            def dispose() -> None:
                sub.dispose()
                state.dispose()

            return Disposable(dispose)

        return Stage(subscribe)

    return operator


class _Split:
    """One subscription's state: the channel inputs, once the format is known."""

    def __init__(
        self,
        fmt: AudioFormat,
        build: Callable[[int, AudioFormat], Operator],
        max_channels: int,
        max_header_bytes: int,
        observer: abc.ObserverBase[Frame],
        scheduler: Any,
    ) -> None:
        self.fmt, self.build, self.max_channels, self.max_header_bytes = (
            fmt,
            build,
            max_channels,
            max_header_bytes,
        )
        self.observer, self.scheduler = observer, scheduler
        self.inputs: list[Subject[Frame]] = []
        self.subs: list[abc.DisposableBase] = []
        self.header = b""
        self.carry = b""
        self.dtype = ""
        self.remaining: int | None = None  # bytes a WAV's data chunk still holds (None: to the end)
        self.failed = False
        self.open_channels = 0
        if fmt.encoding in _DTYPES:
            self.start(fmt.encoding, fmt.channels, fmt.sample_rate)

    def start(self, encoding: str, channels: int, rate: int) -> None:
        self.dtype = _DTYPES[encoding]
        mono = AudioFormat(encoding=encoding, sample_rate=rate, channels=1)  # type: ignore[arg-type]
        self.open_channels = channels
        for i in range(channels):
            subject: Subject[Frame] = Subject()
            self.inputs.append(subject)
            chain = self.build(i, mono)(subject)
            self.subs.append(
                chain.subscribe(
                    partial(self.out, i),
                    self.observer.on_error,
                    self.channel_done,
                    scheduler=self.scheduler,
                )
            )

    def out(self, channel: int, frame: Frame) -> None:
        if isinstance(frame, _TAGGED):
            self.observer.on_next(dataclasses.replace(frame, channel=channel))
        elif not isinstance(frame, SessionUpdated) or channel == 0:
            self.observer.on_next(frame)

    def channel_done(self) -> None:
        self.open_channels -= 1
        if self.open_channels == 0:
            self.observer.on_completed()

    def fail(self, message: str) -> None:
        self.failed = True
        self.observer.on_next(ErrorEvent(code="bad_audio", message=message, fatal=True))

    def on_next(self, frame: Frame) -> None:
        if not isinstance(frame, RawAudio):
            if self.inputs:
                for subject in self.inputs:
                    subject.on_next(frame)
            else:
                self.observer.on_next(frame)
            return
        if self.failed or not frame.data:
            return
        try:
            data = bytes(frame.data)
            if self.inputs:
                self.feed(data)
            else:
                self.wav_header(data)
        except Exception as exc:  # a bug, not bad input: end the session visibly
            self.observer.on_error(exc)

    def wav_header(self, data: bytes) -> None:
        """Accumulate a WAV header; once it is whole, start the channels and feed them its data."""
        self.header += data
        try:
            parsed = parse_wav_header(self.header)
        except ValueError as exc:
            self.fail(str(exc))
            return
        if parsed is None:
            if len(self.header) > self.max_header_bytes:
                self.fail(f"no WAV data chunk within the first {self.max_header_bytes} bytes")
            return
        pf = parsed.fmt
        encoding = {("i", 2): "pcm_s16le", ("f", 4): "pcm_f32le"}.get((pf.kind, pf.width))
        if encoding is None:
            self.fail("a multichannel WAV must hold 16-bit PCM or 32-bit float samples")
            return
        if pf.channels > self.max_channels:
            self.fail(f"the WAV has {pf.channels} channels; this hub transcribes at most {self.max_channels}")
            return
        body, self.header = self.header[parsed.data_offset :], b""
        self.remaining = parsed.data_size
        self.start(encoding, pf.channels, pf.rate)
        self.feed(body)

    def feed(self, data: bytes) -> None:
        if self.remaining is not None:
            data = data[: self.remaining]
            self.remaining -= len(data)
        n = len(self.inputs)
        frame_bytes = np.dtype(self.dtype).itemsize * n
        buf = self.carry + data if self.carry else data
        whole = len(buf) - len(buf) % frame_bytes
        self.carry = buf[whole:]
        if not whole:
            return
        samples = np.frombuffer(buf, self.dtype, count=whole // frame_bytes * n).reshape(-1, n)
        for i, subject in enumerate(self.inputs):
            subject.on_next(RawAudio(np.ascontiguousarray(samples[:, i]).tobytes()))

    def on_completed(self) -> None:
        if self.carry:
            self.observer.on_next(
                ErrorEvent(
                    code="bad_audio",
                    message=f"stream ended inside a sample frame: {len(self.carry)} trailing bytes dropped",
                )
            )
            self.carry = b""
        if not self.inputs:
            if self.header and not self.failed:
                self.observer.on_next(
                    ErrorEvent(code="bad_audio", message="the stream ended inside the WAV header")
                )
            self.observer.on_completed()
            return
        for subject in self.inputs:
            subject.on_completed()

    def dispose(self) -> None:
        subs, self.subs = self.subs, []
        for sub in subs:
            sub.dispose()
        for subject in self.inputs:
            subject.dispose()
