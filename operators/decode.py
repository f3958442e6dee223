"""``decode``: client bytes (RawAudio) → mono float32 AudioChunks at the source rate.

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
  (see ``_avstream``), decoded audio delivered on the loop thread. Frames that pass through keep
  their place behind the audio decoded before them; completion waits until the decoder has
  drained. Decoded samples are made finite and clipped to [-1, 1] (corrupt data can decode to
  ±20). Undecodable, corrupt or truncated data → ``bad_audio`` (at most 5 per stream). A frame
  that would overflow ``max_buffer_bytes`` of undecoded input is taken anyway and holds the
  session's ``pending`` (``Session.feed`` waits, which pushes back on the client's socket) until
  the decoder has drained to half the bound — so undecoded input stays under
  ``max_buffer_bytes`` + one frame. Without a ``pending`` (decoding outside a session) such a
  frame is dropped with ``too_large``. With ``slots`` (the hub's bound on decoder threads) the
  thread starts only when a slot is free; until then ``pending`` is held, and the slot goes
  back when the thread ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from reactivex import Observable, abc
from reactivex.disposable import Disposable

from asrhub.config import AudioFormat
from asrhub.flow import Pending, Slots, Stage
from asrhub.frames import AudioChunk, ErrorEvent, Frame, RawAudio, Samples
from asrhub.plugin import Operator

from ._avdecode import concat
from ._avstream import DONE, StreamDecoder
from ._decode_file import RAW_PCM as _RAW
from ._decode_file import bounded, decode_file
from ._pcm import Pcm16Chunk, PcmDecoder, PcmFormat, parse_wav_header

__all__ = ["decode", "decode_file"]


def decode(
    fmt: AudioFormat,
    *,
    max_buffer_bytes: int = 8 << 20,
    max_header_bytes: int = 256 << 10,
    max_backlog_s: float = 30.0,
    pending: Pending | None = None,
    slots: Slots | None = None,
) -> Operator:
    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: Any = None) -> abc.DisposableBase:
            state = _Decoding(fmt, observer, max_buffer_bytes, max_header_bytes, max_backlog_s)
            state.pending, state.slots = pending, slots
            sub = source.subscribe(state.on_next, observer.on_error, state.on_completed, scheduler=scheduler)

            def dispose() -> None:
                sub.dispose()
                state.disposed = True
                if state.av is not None:
                    state.av.close()

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
                backlog = int(self.max_backlog_s * 48_000)
                slots, loop = self.slots, self.loop
                self.av = StreamDecoder(
                    self.encoding,
                    self.deliver,
                    max_buffer_bytes=self.max_buffer_bytes,
                    max_backlog=backlog,
                    on_room=self.room,
                    on_exit=self.slot_back if slots is not None and loop is not None else None,
                    start=slots is None or loop is None,
                )
                if slots is not None and loop is not None and not slots.take(self.slot_ready):
                    if self.pending is not None:  # no decoder free: hold the client back
                        self.pending.hold("decoder")
                elif slots is not None and loop is not None:
                    self.av.start()
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

    def slot_ready(self) -> None:
        """On the loop: a decoder thread is free for this session now."""
        if self.disposed or self.av is None:
            if self.slots is not None:
                self.slots.give()  # closed while waiting: pass the slot on
            return
        if self.pending is not None:
            self.pending.unhold("decoder")
        self.av.start()

    def slot_back(self) -> None:
        """From the decoder thread, as it ends: its slot goes back (on the loop)."""
        slots, loop = self.slots, self.loop
        if slots is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(slots.give)
            except RuntimeError:  # the loop is closed: the hub is gone
                pass

    def room(self) -> None:
        """From the decoder thread: the byte feed drained after an overflow; let feed go on."""
        pending, loop = self.pending, self.loop
        if pending is not None and loop is not None:
            try:
                loop.call_soon_threadsafe(pending.unhold, "decode")
            except RuntimeError:  # the loop is closed: the session is gone
                pass

    def deliver(self, items: list[Any]) -> None:
        """Decoder outbox → observer, on the loop thread; consecutive audio becomes one chunk."""
        parts: list[Samples] = []
        rate = 0
        for item in (*items, None):
            if isinstance(item, tuple) and (not parts or item[1] == rate):
                parts.append(item[0])
                rate = item[1]
                continue
            if parts:
                self.emit(bounded(concat(parts)), rate)
                parts = []
            if isinstance(item, tuple):
                parts, rate = [item[0]], item[1]
            elif item is DONE:
                self.av_done = True
                if self.upstream_done:
                    self.observer.on_completed()
            elif item is not None:
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
