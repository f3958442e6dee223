"""``decode``: client bytes (RawAudio) → mono float32 AudioChunks (PCM at its own rate, compressed at 16 kHz).

::

    RawAudio:   --[b1]--[b2]----------[b3]--|
    decode:     --a0----a1--(e:bad)---a2----|     a_n = AudioChunk(start = samples so far / rate, seq = n)

* ``pcm_s16le`` / ``pcm_f32le``: numpy, interleaved channels mixed down to mono. Mono PCM16
  (also in a WAV) becomes a ``Pcm16Chunk``: an AudioChunk that keeps the client's bytes. A partial sample
  frame is kept for the next RawAudio (a client may split a sample across frames); a stream that
  ends inside one gets a ``bad_audio`` error. NaN/inf in f32 audio: a ``bad_audio`` error, and
  those samples are replaced by 0 (the frame is kept so stream time still counts every sample
  received); float samples are clipped to [-1, 1].
* ``wav``: the RIFF header is parsed from the first bytes (accumulated up to
  ``max_header_bytes``); its format wins over the declared ``sample_rate``/``channels``. A data
  size of 0 or 0xFFFFFFFF (streaming writers) means "until the end"; a size larger than what
  arrives is accepted (decoded as far as it goes); bytes after a known data size are ignored.
  A header that is not a supported WAV → one ``bad_audio`` error, the rest of the stream ignored.
* compressed (opus/ogg/webm/mp3/flac) and ``auto``: streamed through PyAV on a per-session thread
  (see ``_avstream``, ``_avdecode``), which also resamples to ``rate`` (16 kHz), makes samples
  finite and clipped to [-1, 1] and joins them into blocks of up to 1 s, so the loop only hands
  chunks on (at most 1 s of audio per callback). Frames that pass through keep their place
  behind the audio decoded before them; completion waits until the decoder has drained.
  Undecodable, corrupt or truncated data, a container outside the accepted ones, a sample rate
  over ``max_rate`` → ``bad_audio`` (at most 5 per stream). A frame that would overflow
  ``max_buffer_bytes`` of undecoded input is taken anyway and holds the session's ``pending``
  (``Session.feed`` waits, which pushes back on the client's socket) until the decoder has
  drained to half the bound — so undecoded input stays under ``max_buffer_bytes`` + one frame.
  Without a ``pending`` (decoding outside a session) such a frame is dropped with ``too_large``.
* decoder threads (``slots``, the hub's :class:`~asrhub.flow.Slots`): the thread starts only
  when the session's ``key`` gets a slot; until then ``pending`` is held. A session that waits
  longer than ``slot_wait_s`` gets a fatal ``capacity`` error; one that is disposed while it
  waits leaves the line. A thread that produces no audio for ``stall_s`` (bytes trickling in,
  or none) is stopped with a fatal ``timeout``; its slot goes back when it ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from asrhub.config import AudioFormat
from asrhub.flow import Claim, Pending, Slots, Stage
from asrhub.frames import TARGET_RATE, AudioChunk, ErrorEvent, Frame, RawAudio, Samples
from asrhub.plugin import Operator

from ._avdecode import MAX_RATE
from ._avstream import DONE, Block, StreamDecoder
from ._decode_file import RAW_PCM as _RAW
from ._decode_file import decode_file
from ._pcm import Pcm16Chunk, PcmDecoder, PcmFormat, parse_wav_header, wav_channels

__all__ = ["decode", "decode_file", "wav_channels"]


def decode(
    fmt: AudioFormat,
    *,
    max_buffer_bytes: int = 8 << 20,
    max_header_bytes: int = 256 << 10,
    max_backlog_s: float = 30.0,
    pending: Pending | None = None,
    slots: Slots | None = None,
    key: str | None = None,
    slot_wait_s: float | None = None,
    stall_s: float | None = None,
    rate: int = TARGET_RATE,
    max_rate: int = MAX_RATE,
) -> Operator:
    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: Any = None) -> abc.DisposableBase:
            state = _Decoding(fmt, observer, max_buffer_bytes, max_header_bytes, max_backlog_s)
            state.pending, state.slots, state.key = pending, slots, key
            state.slot_wait_s, state.stall_s, state.out_rate, state.max_rate = (
                slot_wait_s,
                stall_s,
                rate,
                max_rate,
            )
            sub = source.subscribe(state.on_next, observer.on_error, state.on_completed, scheduler=scheduler)

            def dispose() -> None:
                sub.dispose()
                state.dispose()

            return Disposable(dispose)

        return Stage(subscribe)

    return operator


class _Decoding:
    """One subscription's state."""

    def __init__(self, fmt: AudioFormat, observer: abc.ObserverBase[Frame], *bounds: Any) -> None:
        self.encoding, self.observer = fmt.encoding, observer
        self.max_buffer_bytes, self.max_header_bytes, self.max_backlog_s = bounds
        raw = _RAW.get(fmt.encoding)
        self.pcm = PcmDecoder(PcmFormat(*raw, fmt.channels, fmt.sample_rate)) if raw else None
        self.direct = self._direct_rate()
        self.header = b""
        self.av: StreamDecoder | None = None
        self.pending: Pending | None = None
        self.slots: Slots | None = None
        self.key: str | None = None
        self.claim: Claim | None = None
        self.slot_wait_s: float | None = None
        self.slot_deadline: asyncio.TimerHandle | None = None
        self.stall_s: float | None = None
        self.out_rate, self.max_rate = TARGET_RATE, MAX_RATE
        self.disposed = False
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None
        self.failed = self.upstream_done = self.av_done = False
        self.t0, self.emitted, self.seq, self.rate = 0.0, 0, 0, 0

    def _direct_rate(self) -> int:
        """The rate, when every whole-sample frame becomes one Pcm16Chunk as is (mono PCM16 with
        no byte limit: raw, or a WAV of unknown length); else 0."""
        pcm = self.pcm
        return pcm.fmt.rate if pcm is not None and pcm.mono16 and pcm.remaining is None else 0

    def emit(self, x: Samples, rate: int) -> None:
        self.observer.on_next(AudioChunk(x, rate, self._start(rate), self.seq))
        self.emitted += len(x)
        self.seq += 1

    def emit_pcm16(self, pcm: bytes, rate: int) -> None:
        """Mono PCM16 as a Pcm16Chunk whose float samples are made when first read."""
        chunk = Pcm16Chunk(None, rate, self._start(rate), self.seq, pcm)  # type: ignore[arg-type]
        self.observer.on_next(chunk)
        self.emitted += len(pcm) >> 1
        self.seq += 1

    def _start(self, rate: int) -> float:
        if rate != self.rate:  # only a new stream rate restarts the sample count
            self.t0 += self.emitted / self.rate if self.rate else 0.0
            self.emitted, self.rate = 0, rate
        return self.t0 + self.emitted / rate

    def error(self, message: str, code: str = "bad_audio") -> None:
        self.observer.on_next(ErrorEvent(code=code, message=message))

    def on_next(self, frame: Frame) -> None:
        direct = self.direct
        if direct and type(frame) is RawAudio:  # the hot path: mono PCM16 bytes, whole samples
            data, pcm = frame.data, self.pcm
            if type(data) is bytes and data and not len(data) & 1 and pcm is not None and not pcm.carry:
                try:
                    start = self._start(direct) if direct != self.rate else self.t0 + self.emitted / direct
                    self.observer.on_next(Pcm16Chunk(None, direct, start, self.seq, data))  # type: ignore[arg-type]
                except Exception as exc:  # a bug, not bad input: end the session visibly
                    self.observer.on_error(exc)
                    return
                self.emitted += len(data) >> 1
                self.seq += 1
                return
        if not isinstance(frame, RawAudio):
            if self.av is not None and not self.av_done:
                self.av.post(frame)  # behind the audio still being decoded
            else:
                self.observer.on_next(frame)
        elif frame.data and not self.failed:
            try:
                self.feed(bytes(frame.data))
            except Exception as exc:  # a bug, not bad input: end the session visibly
                self.observer.on_error(exc)

    def feed(self, data: bytes) -> None:
        if self.pcm is None and self.encoding == "wav":
            self.header += data
            try:
                parsed = parse_wav_header(self.header)
            except ValueError as exc:
                self.failed = True
                return self.error(str(exc))
            if parsed is None:
                if len(self.header) > self.max_header_bytes:
                    self.failed = True
                    self.error(f"no WAV data chunk within the first {self.max_header_bytes} bytes")
                return None
            self.pcm = PcmDecoder(parsed.fmt, parsed.data_size)
            self.direct = self._direct_rate()
            data, self.header = self.header[parsed.data_offset :], b""
        if self.pcm is not None and self.pcm.mono16:  # the hot path: the chunk keeps the client's bytes
            buf = self.pcm.take(data)
            if buf is not None:
                self.emit_pcm16(buf, self.pcm.fmt.rate)
        elif self.pcm is not None:
            x, nonfinite = self.pcm.feed(data)
            if nonfinite:
                self.error("NaN or infinite samples in float audio (replaced by silence)")
            if x is not None:
                self.emit(x, self.pcm.fmt.rate)
        elif not self.av_done:
            if self.av is None:
                self.start_decoder()
            assert self.av is not None
            if self.av.feed.put(data):
                pass
            elif self.pending is not None:  # take it, and hold the client back until drained
                self.pending.hold("decode")
                self.av.feed.put(data, force=True)
            else:
                message = f"more than {self.max_buffer_bytes} bytes wait for the decoder: audio frame dropped"
                self.av.post(ErrorEvent(code="too_large", message=message))
                return None
            if not self.av.on_loop:
                self.av.drain()
        return None

    def start_decoder(self) -> None:
        slots, loop = self.slots, self.loop
        bounded = slots is not None and loop is not None
        self.av = StreamDecoder(
            self.encoding,
            self.deliver,
            max_buffer_bytes=self.max_buffer_bytes,
            max_backlog=int(self.max_backlog_s * self.out_rate),
            rate=self.out_rate,
            max_rate=self.max_rate,
            stall_s=self.stall_s,
            on_room=self.room,
            on_exit=self.slot_back if bounded else None,
            start=not bounded,
        )
        if slots is None or loop is None:
            return
        self.claim = slots.take(self.slot_ready, self.key)
        if self.claim.held:
            self.av.start()
            return
        if self.pending is not None:  # no decoder free: hold the client back
            self.pending.hold("decoder")
        if self.slot_wait_s is not None:
            self.slot_deadline = loop.call_later(self.slot_wait_s, self.slot_expired)

    def slot_ready(self) -> None:
        """On the loop: a decoder thread is free for this session now."""
        if self.slot_deadline is not None:
            self.slot_deadline.cancel()
            self.slot_deadline = None
        if self.pending is not None:
            self.pending.unhold("decoder")
        if self.av is not None:
            self.av.start()

    def slot_expired(self) -> None:
        """On the loop: no decoder came within ``slot_wait_s``; the session cannot go on."""
        self.slot_deadline = None
        claim = self.claim
        if self.disposed or claim is None or claim.held or self.slots is None:
            return
        self.slots.leave(claim)
        self.av_done = self.failed = True
        if self.av is not None:
            self.av.close()
        if self.pending is not None:
            self.pending.unhold("decoder")
        message = (
            f"no audio decoder free within {self.slot_wait_s:g} s "
            f"({self.slots.size} decode at once, at most {self.slots.per_key} per API key); retry later"
        )
        self.observer.on_next(ErrorEvent(code="capacity", message=message, fatal=True))
        if self.upstream_done:
            self.observer.on_completed()

    def slot_back(self) -> None:
        """From the decoder thread, as it ends: its slot goes back (on the loop)."""
        slots, loop, claim = self.slots, self.loop, self.claim
        if slots is not None and loop is not None and claim is not None:
            try:
                loop.call_soon_threadsafe(slots.leave, claim)
            except RuntimeError:  # the loop is closed: the hub is gone
                pass

    def dispose(self) -> None:
        self.disposed = True
        if self.slot_deadline is not None:
            self.slot_deadline.cancel()
            self.slot_deadline = None
        claim = self.claim
        if claim is not None and not claim.held and self.slots is not None:
            self.slots.leave(
                claim
            )  # closed while waiting: out of the line (a held slot comes back as its thread ends)
        if self.av is not None:
            self.av.close()

    def room(self) -> None:
        """From the decoder thread: the byte feed drained after an overflow; let feed go on."""
        pending, loop = self.pending, self.loop
        if pending is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(pending.unhold, "decode")
            except RuntimeError:  # the loop is closed: the session is gone
                pass

    def deliver(self, items: list[Any]) -> None:
        """Decoder outbox → observer, on the loop thread: each block of audio is one chunk."""
        rate = self.out_rate
        for item in items:
            if type(item) is Block:
                if item.n:
                    self.emit(item.samples, rate)
            elif item is DONE:
                self.av_done = True
                if self.upstream_done:
                    self.observer.on_completed()
            else:
                self.observer.on_next(item)

    def on_completed(self) -> None:
        self.upstream_done = True
        if self.av is not None and not self.av_done:
            self.av.feed.finish()  # completion follows the decoder's DONE
            if not self.av.on_loop:
                self.av.wait()
            return
        if self.pcm is not None and self.pcm.carry:
            self.error(f"stream ended inside a sample frame: {len(self.pcm.carry)} trailing bytes dropped")
        elif self.encoding == "wav" and self.header and not self.failed:
            self.error("stream ended inside the WAV header")
        self.observer.on_completed()
