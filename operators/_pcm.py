"""Uncompressed audio for ``decode``: PCM sample formats and the WAV (RIFF) header.

:class:`PcmDecoder` turns byte frames of interleaved PCM into mono float32, keeping a partial
sample frame (an odd byte, half a stereo pair) across calls so a client may split samples between
network frames. :func:`parse_wav_header` reads a RIFF/RF64 header incrementally.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from asrhub.frames import AudioChunk, Samples
from asrhub.pcm import float_to_pcm16, pcm16_to_float

__all__ = [
    "Pcm16Chunk",
    "PcmDecoder",
    "PcmFormat",
    "float_to_pcm16",
    "parse_wav_header",
    "pcm16_to_float",
    "pcm_to_float",
]

_INT_SCALE = {1: 1.0 / 128, 2: 1.0 / 32768, 3: 1.0 / 8388608, 4: 1.0 / 2147483648}
_MONO16 = ("i", 2, 1)


_SAMPLES: Any = AudioChunk.__dict__["samples"]  # the slot behind AudioChunk.samples


@dataclass(frozen=True, slots=True)
class Pcm16Chunk(AudioChunk):
    """An AudioChunk decoded from mono PCM16 that keeps the client's bytes: ``samples`` is exactly
    ``pcm16_to_float(pcm)``, so a consumer that needs int16 (webrtcvad) reads ``pcm`` as is.

    ``samples`` may be given as ``None``: the float32 array is then made from ``pcm`` the first
    time someone reads it (and kept, read-only). Audio nobody reads as float — silence in front
    of the VAD, every chunk of a session with no engine — never pays for the conversion."""

    pcm: bytes

    def __post_init__(self) -> None:
        pass  # samples are frozen as they are set (see _set_samples)

    @property
    def duration(self) -> float:
        return len(self.pcm) / (2 * self.sample_rate)


def _get_samples(self: Pcm16Chunk) -> Samples:
    try:
        return _SAMPLES.__get__(self, Pcm16Chunk)  # type: ignore[no-any-return]
    except AttributeError:  # not made yet
        x = pcm16_to_float(self.pcm)
        x.flags.writeable = False
        _SAMPLES.__set__(self, x)
        return x


def _set_samples(self: Pcm16Chunk, x: Samples | None) -> None:
    if x is not None:
        if x.flags.writeable:
            x.flags.writeable = False
        _SAMPLES.__set__(self, x)


# After the class is made: a slotted dataclass drops class attributes named like a field.
setattr(Pcm16Chunk, "samples", property(_get_samples, _set_samples))  # noqa: B010


_MIN_RATE, _MAX_RATE, _MAX_CHANNELS = 1000, 768_000, 64


@dataclass(frozen=True, slots=True)
class PcmFormat:
    """``kind``: "i" signed little-endian int, "u" unsigned 8-bit, "f" IEEE float."""

    kind: str
    width: int
    channels: int
    rate: int

    @property
    def frame_bytes(self) -> int:
        return self.width * self.channels


def pcm_to_float(buf: bytes | memoryview, fmt: PcmFormat) -> Samples:
    """Whole sample frames of interleaved PCM → a new mono float32 array (float input unclipped)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf, a huge float64: made finite later
        return _to_float(buf, fmt)


def _to_float(buf: bytes | memoryview, fmt: PcmFormat) -> Samples:
    if fmt.kind == "f":
        x = np.frombuffer(buf, "<f4" if fmt.width == 4 else "<f8").astype(np.float32)
    elif fmt.width == 3:
        b = np.frombuffer(buf, np.uint8).reshape(-1, 3)
        wide = np.zeros((len(b), 4), np.uint8)
        wide[:, 1:] = b
        x = (wide.view("<i4")[:, 0] >> 8).astype(np.float32)
        x *= _INT_SCALE[3]
    elif fmt.kind == "u":
        x = np.frombuffer(buf, np.uint8).astype(np.float32)
        x -= 128.0
        x *= _INT_SCALE[1]
    else:
        x = np.frombuffer(buf, f"<i{fmt.width}").astype(np.float32)
        x *= _INT_SCALE[fmt.width]
    if fmt.channels > 1:  # float input: mixed in float64, so huge finite samples stay finite
        mix_type = np.float64 if fmt.kind == "f" else np.float32
        x = x.reshape(-1, fmt.channels).mean(axis=1, dtype=mix_type).astype(np.float32, copy=False)
    return x


class PcmDecoder:
    """Stateful bytes → mono float32 at ``fmt.rate``; ``limit`` caps the bytes taken (a WAV data size)."""

    __slots__ = ("carry", "fmt", "mono16", "remaining")

    def __init__(self, fmt: PcmFormat, limit: int | None = None) -> None:
        self.fmt = fmt
        self.carry = b""
        self.remaining = limit
        self.mono16 = (fmt.kind, fmt.width, fmt.channels) == _MONO16
        """Mono PCM16: ``take`` + ``pcm16_to_float`` is the whole decode (and keeps the bytes)."""

    def take(self, data: bytes) -> bytes | None:
        """The whole sample frames available (None if none yet); a partial one waits in ``carry``."""
        if self.remaining is not None:
            data = data[: self.remaining]
            self.remaining -= len(data)
        if self.carry:
            data = self.carry + data
        usable = len(data) - len(data) % self.fmt.frame_bytes
        self.carry = data[usable:]
        if usable == 0:
            return None
        return data if usable == len(data) else data[:usable]

    def feed(self, data: bytes) -> tuple[Samples | None, bool]:
        """Returns (samples or None if no whole sample frame yet, True if NaN/inf were zeroed)."""
        buf = self.take(data)
        if buf is None:
            return None, False
        if self.mono16:
            return pcm16_to_float(buf), False
        x = pcm_to_float(buf, self.fmt)
        if self.fmt.kind != "f":
            return x, False
        bad = not bool(np.isfinite(x).all())
        if bad:
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(x, -1.0, 1.0, out=x)
        return x, bad


@dataclass(frozen=True, slots=True)
class WavHeader:
    fmt: PcmFormat
    data_offset: int
    data_size: int | None
    """``None``: unknown length (0 or 0xFFFFFFFF, as streaming writers and RF64 put it)."""


def parse_wav_header(buf: bytes) -> WavHeader | None:
    """The header at the start of ``buf``; ``None`` while more bytes are needed.

    Raises ValueError for anything that is not a WAV this decoder supports (PCM 8/16/24/32-bit,
    IEEE float 32/64, also as WAVE_FORMAT_EXTENSIBLE).
    """
    if len(buf) >= 4 and buf[:4] not in (b"RIFF", b"RF64"):
        raise ValueError("not a WAV stream (no RIFF header)")
    if len(buf) >= 12 and buf[8:12] != b"WAVE":
        raise ValueError("not a WAV stream (RIFF type is not WAVE)")
    off, fmt = 12, None
    while len(buf) >= off + 8:
        cid, size = buf[off : off + 4], int.from_bytes(buf[off + 4 : off + 8], "little")
        body = off + 8
        if cid == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before the fmt chunk")
            return WavHeader(fmt, body, None if size in (0, 0xFFFFFFFF) else size)
        if cid == b"fmt ":
            if len(buf) < body + size:
                return None
            fmt = _parse_fmt(buf[body : body + size])
        off = body + size + (size & 1)
    return None


def _parse_fmt(body: bytes) -> PcmFormat:
    if len(body) < 16:
        raise ValueError("WAV fmt chunk too short")
    tag, channels, rate, _byte_rate, align, bits = struct.unpack_from("<HHIIHH", body)
    if tag == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag
        tag = int.from_bytes(body[24:26], "little")
    if not 1 <= channels <= _MAX_CHANNELS or not _MIN_RATE <= rate <= _MAX_RATE:
        raise ValueError(f"WAV header has {channels} channels at {rate} Hz: not supported")
    width = align // channels if align and align % channels == 0 else bits // 8
    if tag == 1 and width in (1, 2, 3, 4):
        return PcmFormat("u" if width == 1 else "i", width, channels, rate)
    if tag == 3 and width in (4, 8):
        return PcmFormat("f", width, channels, rate)
    raise ValueError(f"WAV format tag {tag:#x} with {bits}-bit samples is not supported")


def wav_channels(data: bytes, max_channels: int) -> list[bytes] | None:
    """A PCM WAV file → one mono WAV file per channel (same rate and sample format), for
    transcribing each channel of a file on its own (``multichannel``). None: ``data`` is not a
    WAV (a compressed container: the caller refuses). ValueError: a WAV this hub cannot read, or
    one with more than ``max_channels`` channels. Memory: the file's bytes twice."""
    if data[:4] != b"RIFF":
        return None
    header = parse_wav_header(data)
    if header is None:
        raise ValueError("no WAV data chunk")
    fmt = header.fmt
    if fmt.channels > max_channels:
        raise ValueError(f"the WAV has {fmt.channels} channels; this hub transcribes at most {max_channels}")
    body = data[header.data_offset :]
    if header.data_size is not None:
        body = body[: header.data_size]
    frames = len(body) // fmt.frame_bytes
    planes = np.frombuffer(body, np.uint8, count=frames * fmt.frame_bytes).reshape(
        frames, fmt.channels, fmt.width
    )
    tag = 3 if fmt.kind == "f" else 1
    out = []
    for i in range(fmt.channels):
        pcm = np.ascontiguousarray(planes[:, i, :]).tobytes()
        fmt_chunk = struct.pack("<HHIIHH", tag, 1, fmt.rate, fmt.rate * fmt.width, fmt.width, fmt.width * 8)
        riff = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt_chunk + b"data" + struct.pack("<I", len(pcm))
        out.append(b"RIFF" + struct.pack("<I", len(riff) + len(pcm)) + riff + pcm)
    return out
