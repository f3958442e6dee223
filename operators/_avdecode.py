"""Compressed audio through PyAV: one generator shared by the streaming decoder thread of
``decode`` and by ``decode_file``.

:func:`iter_decode` reads a (possibly non-seekable, blocking) file object and yields mono
float32 samples at the output ``rate`` (16 kHz: resampled here, on the caller's thread, not on
the event loop), finite and within [-1, 1] (corrupt data can decode to ±20), or a ``str`` that
describes a problem (a ``bad_audio`` for the caller; a :class:`Refusal` ends the stream with its
own code). It never raises.

What it refuses or reports:

* a container that is not one of the audio containers the hub accepts (:data:`FORMATS`): FFmpeg
  opens the input with a format whitelist and an empty protocol whitelist, so a playlist or
  concat script (HLS, DASH, ffconcat, …) can neither be probed nor open another file or URL;
  a container that cannot be opened, has no audio stream, or from which nothing decodes;
* a sample rate above ``max_rate`` (the header's or a frame's): decoding cost grows with the
  rate, and no speech model needs more than 48 kHz;
* with ``max_s``: a declared duration over it (before decoding), and decoded output over
  ``max_s`` × ``rate`` samples, counted as it is produced (:class:`TooLong`);
* a packet the codec rejects (decoding goes on with the next one);
* a jump in packet timestamps: packets were lost (a corrupt page or block was skipped, or the
  sender dropped audio); the missing time is filled with silence, at most :data:`MAX_GAP_S`
  per gap and :data:`MAX_GAPS_S` per stream in total — past that, gaps are reported, not filled;
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

from asrhub.frames import TARGET_RATE, Samples

CONTAINERS: dict[str, str | None] = {
    "mp3": "mp3",
    "opus": "ogg",
    "ogg": "ogg",
    "webm": "matroska",
    "flac": "flac",
    "wav": "wav",
    "auto": None,
}
FORMATS = ("wav", "ogg", "matroska", "mp3", "flac", "aac", "mov")
"""FFmpeg demuxers the hub opens (``mov`` is MP4/M4A/MOV; ``matroska`` is WebM/MKA/MKV): the
audio containers docs/protocol.md names. Anything else — HLS and DASH playlists, ffconcat
scripts, image sequences, raw data — is refused before it is probed further."""
_OPEN_OPTIONS = {"probesize": "32", "analyzeduration": "1"}
"""Small probes so a live stream starts decoding after its first packets, not after 5 MB."""
_CONTAINER_OPTIONS = {"format_whitelist": ",".join(FORMATS), "protocol_whitelist": ""}
MAX_RATE = 48_000
MAX_GAP_S = 10.0
"""Silence filled in for one timestamp jump."""
MAX_GAPS_S = 60.0
"""Silence filled in for all the timestamp jumps of one stream together."""
_TRUNCATION_TOLERANCE_S = 0.3
_OGG_MAX_PAGE = 27 + 255 + 255 * 255


class Refusal(str):
    """A problem that ends the stream, with its own error code."""

    code = "bad_audio"


class TooLong(Refusal):
    code = "too_large"


def iter_decode(
    file: Any,
    encoding: str,
    *,
    head: Callable[[], bytes],
    tail: Callable[[], bytes],
    rate: int = TARGET_RATE,
    max_rate: int = MAX_RATE,
    max_s: float | None = None,
) -> Iterator[Samples | str]:
    """``head``/``tail`` give the first 8 KiB / last 64 KiB of the stream once it has ended."""
    name = encoding if encoding != "auto" else "audio"
    try:
        container = av.open(
            file,
            mode="r",
            format=CONTAINERS[encoding],
            options=_OPEN_OPTIONS,
            container_options=_CONTAINER_OPTIONS,
        )
    except Exception as exc:
        accepted = " (accepted containers: wav, ogg, webm/matroska, mp3, flac, aac, mp4/m4a)"
        yield Refusal(f"cannot read the {name} stream{accepted if encoding == 'auto' else ''}: {exc}")
        return
    with container:
        if not container.streams.audio:
            yield Refusal(f"the {name} stream has no audio track")
            return
        stream = container.streams.audio[0]
        if (fast := _too_fast(name, stream.codec_context.sample_rate or 0, max_rate)) is not None:
            yield fast
            return
        declared = _declared_s(container, stream)
        if max_s is not None and declared is not None and declared > max_s:
            yield TooLong(f"the {name} stream lasts {declared:.0f} s; the limit is {max_s:g} s")
            return
        budget = round(max_s * rate) if max_s is not None else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        total = spf = source_rate = 0
        gaps_left = round(MAX_GAPS_S * rate)
        next_pts = None
        try:
            for packet in container.demux(stream):
                if packet.pts is not None and packet.duration:
                    if next_pts is not None and packet.pts - next_pts > packet.duration // 2:
                        lost = float((packet.pts - next_pts) * stream.time_base)
                        gap = min(round(lost * rate), round(MAX_GAP_S * rate), gaps_left) if spf else 0
                        filled = f"; {gap / rate:.3f} s of silence put in its place" if gap else ""
                        yield f"{lost:.3f} s of audio missing in the {name} stream (lost packets){filled}"
                        if gap:  # silence keeps stream time on the sender's clock
                            gaps_left -= gap
                            total += gap
                            if budget is not None and total > budget:
                                yield TooLong(f"the {name} stream is longer than {max_s:g} s")
                                return
                            yield np.zeros(gap, np.float32)
                    next_pts = packet.pts + packet.duration
                try:
                    frames = stream.decode(packet)
                except av.error.FFmpegError as exc:
                    yield f"corrupt {name} stream: {exc}"
                    continue
                for frame in frames:
                    if (fast := _too_fast(name, frame.sample_rate, max_rate)) is not None:
                        yield fast
                        return
                    spf = max(spf, frame.samples)  # samples per frame (the first may be trimmed)
                    source_rate = source_rate or frame.sample_rate
                    for out in resampler.resample(frame):
                        x = bounded(_mono(out))
                        total += len(x)
                        if budget is not None and total > budget:
                            yield TooLong(f"the {name} stream is longer than {max_s:g} s")
                            return
                        yield x
        except Exception as exc:  # a demuxer error mid-stream ends what can be read
            yield f"corrupt {name} stream: {exc}"
        try:
            for out in resampler.resample(None):
                x = bounded(_mono(out))
                total += len(x)
                yield x
        except Exception as exc:  # a resampler never fed (nothing decoded) or fed a changed format
            if total:
                yield f"corrupt {name} stream: {exc}"
        if total == 0:
            yield f"no audio could be decoded from the {name} stream"
            return
        problem = _check_length(container, stream, total / rate, spf, source_rate, head, tail)
        if problem:
            yield f"incomplete {name} stream: {problem}"


def _mono(frame: Any) -> Samples:
    """A resampled frame's samples (``flt``, mono) as one float32 vector."""
    x: Samples = frame.to_ndarray().reshape(-1)
    return x


def _too_fast(name: str, rate: int, max_rate: int) -> Refusal | None:
    if rate <= max_rate:
        return None
    return Refusal(f"the {name} stream's sample rate {rate} Hz is above the limit of {max_rate} Hz")


def bounded(x: Samples) -> Samples:
    """A compressed decoder's float output, made finite and clipped to [-1, 1]: a corrupt
    stream can decode to samples of ±20 (mp3) that no later stage expects."""
    if x.size == 0 or (np.isfinite(x).all() and -1.0 <= x.min() and x.max() <= 1.0):
        return x
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def _declared_s(container: Any, stream: Any) -> float | None:
    """The duration the container declares before decoding, if any."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration / av.time_base)
    return None


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
