"""``decode_file``: a whole file at once, for the batch endpoints (same rules as ``decode``).

Memory: the output — 16 kHz mono float32, at most ``max_s`` of it — is written as it is
produced into one array reserved for ``max_s`` seconds (virtual memory: only the pages written
become resident), so a file costs its bytes plus its decoded 16 kHz samples, never a second copy
for a final concatenation nor the samples at the container's own rate. PCM (raw or WAV) is
converted and resampled in blocks of one second; compressed audio is resampled by the decoder.
"""

from __future__ import annotations

import io

import numpy as np

from asrhub.errors import AudioTooLong
from asrhub.frames import TARGET_RATE, Samples

from ._avdecode import CONTAINERS, MAX_RATE, TooLong, iter_decode
from ._pcm import PcmDecoder, PcmFormat, parse_wav_header
from .resample import Resampler

RAW_PCM = {"pcm_s16le": ("i", 2), "pcm_f32le": ("f", 4)}


class _Output:
    """Samples written in place into an array reserved for the whole budget."""

    def __init__(self, budget: int) -> None:
        self.buf = np.empty(budget, np.float32)
        self.n = 0

    def add(self, x: Samples, max_s: float) -> None:
        if self.n + len(x) > len(self.buf):
            raise AudioTooLong(f"the audio is longer than {max_s:g} s")
        self.buf[self.n : self.n + len(x)] = x
        self.n += len(x)

    @property
    def samples(self) -> Samples:
        return self.buf[: self.n]


def _pcm_wav(data: bytes) -> bool:
    """A WAV the PCM parser takes (FFmpeg gets the others: ADPCM, G.711, …)."""
    if data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        return False
    try:
        return parse_wav_header(data) is not None
    except ValueError:
        return False


def decode_file(
    data: bytes,
    encoding: str = "auto",
    *,
    sample_rate: int = 16_000,
    channels: int = 1,
    strict: bool = True,
    max_s: float = 3600.0,
    max_rate: int = MAX_RATE,
    rate: int = TARGET_RATE,
) -> tuple[Samples, int]:
    """Decode a whole file to (mono float32 at ``rate``, ``rate``). Raises ValueError on bad
    input, :class:`~asrhub.errors.AudioTooLong` (a ValueError) past ``max_s`` seconds.

    ``sample_rate``/``channels`` describe raw PCM only. ``strict``: any problem the streaming
    decoder would report as ``bad_audio`` raises; otherwise only a file with no audio does.
    ``max_s`` bounds the decoded audio, counted as it is produced (a small compressed file can
    expand a lot); ``max_rate`` bounds the sample rate a compressed file may declare.
    """
    problems: list[str] = []
    if not data:
        raise ValueError("empty audio file")
    if encoding == "auto" and _pcm_wav(data):
        encoding = "wav"  # the PCM path: no container rate limit (its cost is its bytes)
    out = _Output(round(max_s * rate) + rate)  # + 1 s: a resampler's tail past an exact bound
    if encoding in RAW_PCM or encoding == "wav":
        if encoding == "wav":
            header = parse_wav_header(data)
            if header is None:
                raise ValueError("truncated WAV header")
            pcm, body = PcmDecoder(header.fmt, header.data_size), memoryview(data)[header.data_offset :]
        else:
            pcm, body = PcmDecoder(PcmFormat(*RAW_PCM[encoding], channels, sample_rate)), memoryview(data)
        fmt = pcm.fmt
        frames = min(len(body), pcm.remaining if pcm.remaining is not None else len(body)) // fmt.frame_bytes
        if frames > max_s * fmt.rate:
            raise AudioTooLong(f"the audio is longer than {max_s:g} s ({frames / fmt.rate:.0f} s)")
        resampler = Resampler(fmt.rate, rate) if fmt.rate != rate else None
        block = fmt.frame_bytes * fmt.rate  # one second
        nonfinite = False
        for i in range(0, len(body), block):
            x, bad = pcm.feed(bytes(body[i : i + block]))
            nonfinite |= bad
            if x is not None:
                out.add(resampler.process(x) if resampler is not None else x, max_s)
        if resampler is not None:
            out.add(resampler.flush(), max_s)
        problems += ["NaN or infinite samples"] if nonfinite else []
        problems += ["the file ends inside a sample frame"] if pcm.carry else []
    elif encoding in CONTAINERS:
        head, tail = data[:8192], data[-65536:]
        for item in iter_decode(
            io.BytesIO(data),
            encoding,
            head=lambda: head,
            tail=lambda: tail,
            rate=rate,
            max_rate=max_rate,
            max_s=max_s,
        ):
            if isinstance(item, TooLong):
                raise AudioTooLong(item)
            if isinstance(item, str):
                problems.append(item)
            else:
                out.add(item, max_s)
    else:
        raise ValueError(f"unknown audio encoding {encoding!r}")
    samples = out.samples
    if strict and problems:
        raise ValueError(problems[0])
    if samples.size == 0:
        raise ValueError(problems[0] if problems else "no audio in the file")
    return samples, rate
