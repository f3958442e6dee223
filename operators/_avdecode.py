"""Compressed audio through PyAV: one generator shared by the streaming decoder thread of
``decode`` and by ``decode_file``.

:func:`iter_decode` reads a (possibly non-seekable, blocking) file object and yields
``(samples, rate)`` pairs — mono float32 at the rate of the first decoded frame — or a ``str``
that describes a problem (a ``bad_audio`` for the caller). It never raises. Problems it finds:

* the container cannot be opened or has no audio stream; nothing at all could be decoded;
* a packet the codec rejects (decoding goes on with the next one);
* a jump in packet timestamps: packets were lost (a corrupt page or block was skipped, or the
  sender dropped audio); the missing time is filled with silence (at most 10 s per gap);
* the stream ends before the length its own header declares (FLAC STREAMINFO, Matroska/WebM
  Duration, MP3 Xing/Info frame count, the granule of an Ogg end-of-stream page) or inside an
  Ogg page: a truncated file. Streams that declare no length (a MediaRecorder WebM, a bare MP3
  stream) cannot be checked for truncation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np

from asrhub.frames import Samples

CONTAINERS: dict[str, str | None] = {
    "mp3": "mp3",
    "opus": "ogg",
    "ogg": "ogg",
    "webm": "matroska",
    "flac": "flac",
    "wav": "wav",
    "auto": None,
}
# Small probes so a live stream starts decoding after its first packets, not after 5 MB.
_OPEN_OPTIONS = {"probesize": "32", "analyzeduration": "1"}
_TRUNCATION_TOLERANCE_S = 0.3
_OGG_MAX_PAGE = 27 + 255 + 255 * 255
_MAX_GAP_S = 10

Decoded = tuple[Samples, int]


def iter_decode(
    file: Any, encoding: str, *, head: Callable[[], bytes], tail: Callable[[], bytes]
) -> Iterator[Decoded | str]:
    """``head``/``tail`` give the first 8 KiB / last 64 KiB of the stream once it has ended."""
    name = encoding if encoding != "auto" else "audio"
    try:
        container = av.open(file, mode="r", format=CONTAINERS[encoding], options=_OPEN_OPTIONS)
    except Exception as exc:
        yield f"cannot read the {name} stream: {exc}"
        return
    with container:
        if not container.streams.audio:
            yield f"the {name} stream has no audio track"
            return
        stream = container.streams.audio[0]
        resampler: Any = None
        total, rate, spf, next_pts = 0, 0, 0, None
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.duration:
                    if next_pts is not None and packet.pts - next_pts > packet.duration // 2:
                        lost = float((packet.pts - next_pts) * stream.time_base)
                        yield f"{lost:.3f} s of audio missing in the {name} stream (corrupt or lost packets)"
                        if rate:  # silence in their place keeps stream time on the sender's clock
                            gap = np.zeros(min(round(lost * rate), _MAX_GAP_S * rate), np.float32)
                            total += len(gap)
                            yield gap, rate
                    next_pts = packet.pts + packet.duration
                try:
                    frames = stream.decode(packet)
                except av.error.FFmpegError as exc:
                    yield f"corrupt {name} stream: {exc}"
                    continue
                for frame in frames:
                    spf = max(spf, frame.samples)  # samples per frame (the first may be trimmed)
                    if resampler is None:
                        rate = frame.sample_rate
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
                    for out in resampler.resample(frame):
                        total += out.samples
                        yield out.to_ndarray().reshape(-1), rate
        except Exception as exc:  # a demuxer error mid-stream ends what can be read
            yield f"corrupt {name} stream: {exc}"
        if resampler is not None:
            for out in resampler.resample(None):
                total += out.samples
                yield out.to_ndarray().reshape(-1), rate
        if total == 0:
            yield f"no audio could be decoded from the {name} stream"
            return
        problem = _check_length(container, stream, total / rate, spf, rate, head, tail)
        if problem:
            yield f"incomplete {name} stream: {problem}"


def _check_length(
    container: Any,
    stream: Any,
    decoded_s: float,
    spf: int,
    rate: int,
    head: Callable[[], bytes],
    tail: Callable[[], bytes],
) -> str | None:
    fmt = container.format.name
    declared: float | None = None
    if "ogg" in fmt:
        page = _last_ogg_page(tail())
        if page is None:
            return "it ends inside an Ogg page"
        flags, granule = page
        if not flags & 0x04:
            return "it ends without the Ogg end-of-stream page"
        declared = float((granule - (stream.start_time or 0)) * stream.time_base)
    elif stream.duration and stream.time_base:
        declared = float(stream.duration * stream.time_base)
    elif container.duration:
        declared = container.duration / 1_000_000
    elif "mp3" in fmt:
        declared = _xing_seconds(head(), spf, rate)
    if declared is not None and decoded_s < declared - _TRUNCATION_TOLERANCE_S:
        return f"decoded {decoded_s:.2f} s of the {declared:.2f} s its header declares"
    return None


def _last_ogg_page(data: bytes) -> tuple[int, int] | None:
    """(header flags, granule position) of a complete page that ends exactly at the end of ``data``."""
    pos = len(data)
    while (pos := data.rfind(b"OggS", 0, pos)) >= 0:
        if len(data) - pos >= 27:
            nseg = data[pos + 26]
            table = data[pos + 27 : pos + 27 + nseg]
            if len(table) == nseg and pos + 27 + nseg + sum(table) == len(data):
                return data[pos + 5], int.from_bytes(data[pos + 6 : pos + 14], "little", signed=True)
        if len(data) - pos > _OGG_MAX_PAGE:
            return None
    return None


def _xing_seconds(head: bytes, spf: int, rate: int) -> float | None:
    for tag in (b"Xing", b"Info"):
        i = head.find(tag)
        if i >= 0 and len(head) >= i + 12 and int.from_bytes(head[i + 4 : i + 8], "big") & 1:
            frames = int.from_bytes(head[i + 8 : i + 12], "big")
            return frames * spf / rate if rate else None
    return None


def concat(parts: list[Samples]) -> Samples:
    if len(parts) == 1:
        return np.ascontiguousarray(parts[0], dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
