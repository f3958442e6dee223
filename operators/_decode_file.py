"""``decode_file``: a whole file at once, for the batch endpoints (same rules as ``decode``)."""

from __future__ import annotations

import io

import numpy as np

from asrhub.frames import Samples

from ._avdecode import CONTAINERS, concat, iter_decode
from ._pcm import PcmDecoder, PcmFormat, parse_wav_header

RAW_PCM = {"pcm_s16le": ("i", 2), "pcm_f32le": ("f", 4)}


def bounded(x: Samples) -> Samples:
    """A compressed decoder's float output, made finite and clipped to [-1, 1]: a corrupt
    stream can decode to samples of ±20 (mp3) that no later stage expects."""
    if np.isfinite(x).all() and (x.size == 0 or (-1.0 <= x.min() and x.max() <= 1.0)):
        return x
    return np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def decode_file(
    data: bytes,
    encoding: str = "auto",
    *,
    sample_rate: int = 16_000,
    channels: int = 1,
    strict: bool = True,
    max_s: float = 3600.0,
) -> tuple[Samples, int]:
    """Decode a whole file to (mono float32, rate). Raises ValueError on bad input.

    ``sample_rate``/``channels`` describe raw PCM only. ``strict``: any problem the streaming
    decoder would report as ``bad_audio`` raises; otherwise only a file with no audio does.
    ``max_s`` bounds the decoded audio (a small compressed file can expand a lot): longer raises.
    """
    problems: list[str] = []
    if not data:
        raise ValueError("empty audio file")
    if encoding in RAW_PCM or encoding == "wav":
        if encoding == "wav":
            header = parse_wav_header(data)
            if header is None:
                raise ValueError("truncated WAV header")
            pcm, body = PcmDecoder(header.fmt, header.data_size), data[header.data_offset :]
        else:
            pcm, body = PcmDecoder(PcmFormat(*RAW_PCM[encoding], channels, sample_rate)), data
        x, nonfinite = pcm.feed(body)
        problems += ["NaN or infinite samples"] if nonfinite else []
        problems += ["the file ends inside a sample frame"] if pcm.carry else []
        samples, rate = (x if x is not None else np.zeros(0, np.float32)), pcm.fmt.rate
    elif encoding in CONTAINERS:
        parts: list[Samples] = []
        rate = total = 0
        head, tail = data[:8192], data[-65536:]
        for item in iter_decode(io.BytesIO(data), encoding, head=lambda: head, tail=lambda: tail):
            if isinstance(item, str):
                problems.append(item)
            else:
                parts.append(item[0])
                rate, total = item[1], total + len(item[0])
                if total > max_s * rate:
                    raise ValueError(f"the audio is longer than {max_s:g} s")
        samples = bounded(concat(parts)) if parts else np.zeros(0, np.float32)
    else:
        raise ValueError(f"unknown audio encoding {encoding!r}")
    if len(samples) > max_s * rate:
        raise ValueError(f"the audio is longer than {max_s:g} s")
    if strict and problems:
        raise ValueError(problems[0])
    if samples.size == 0:
        raise ValueError(problems[0] if problems else "no audio in the file")
    return samples, rate
