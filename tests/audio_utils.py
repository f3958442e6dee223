"""Audio helpers for tests: load fixtures, make noise/music, encode through PyAV, score WER.

Everything works on mono float32 numpy arrays in [-1, 1]. Random generators take an explicit
``seed`` so every derived signal (noisy variants, room noise, tone music) is reproducible; noise
variants are generated at test time rather than committed as files.
"""

from __future__ import annotations

import io
import json
import re
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
MANIFEST = FIXTURES / "manifest.json"
RATE = 16000

FORMATS = ("wav", "flac", "mp3", "opus", "webm")


# --- fixtures ---------------------------------------------------------------------------------


def manifest() -> dict[str, Any]:
    """The parsed ``tests/fixtures/manifest.json``."""
    return cast(dict[str, Any], json.loads(MANIFEST.read_text(encoding="utf-8")))


def fixture(name: str) -> Path:
    """Path of a committed fixture file, e.g. ``fixture("quick_fox.wav")``."""
    return FIXTURES / name


def fixture_entry(name: str) -> dict[str, Any]:
    """The manifest entry (text, duration, segments, ...) of one fixture file."""
    for entry in manifest()["files"]:
        if entry["file"] == name:
            return cast(dict[str, Any], entry)
    raise KeyError(name)


def load_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM WAV (8/16/32-bit int) as mono float32 in [-1, 1]; returns (samples, rate)."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    elif width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise ValueError(f"unsupported sample width {width} in {path}")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return x.astype(np.float32), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int = RATE) -> None:
    """Write mono PCM16 WAV."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16_bytes(samples))


def pcm16_bytes(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] -> little-endian signed 16-bit PCM bytes (clipped)."""
    x = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    return (np.round(x * 32767.0)).astype("<i2").tobytes()


def from_pcm16(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes -> float32 samples."""
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy), float32 out."""
    if rate_in == rate_out:
        return np.asarray(samples, dtype=np.float32)
    from scipy.signal import resample_poly

    f = Fraction(rate_out, rate_in)
    y: np.ndarray = resample_poly(samples, f.numerator, f.denominator)
    return y.astype(np.float32)


# --- synthetic signals ------------------------------------------------------------------------


def rms(samples: np.ndarray) -> float:
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x))) if x.size else 0.0


def _colored_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    if n == 0:
        return np.zeros(0, np.float64)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec /= f ** (exponent / 2.0)
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / (rms(x) or 1.0)


def add_noise(samples: np.ndarray, snr_db: float, seed: int = 0, color: str = "pink") -> np.ndarray:
    """Add white or pink noise at ``snr_db`` (signal power measured over the active part,
    i.e. samples louder than -50 dBFS, so leading/trailing silence does not skew the SNR)."""
    x = np.asarray(samples, dtype=np.float64)
    exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[color]
    noise = _colored_noise(x.size, np.random.default_rng(seed), exponent)
    active = x[np.abs(x) > 10 ** (-50 / 20)]
    p_sig = float(np.mean(active**2)) if active.size else float(np.mean(x**2))
    noise *= np.sqrt(p_sig / 10 ** (snr_db / 10.0))
    noisy: np.ndarray = np.clip(x + noise, -1.0, 1.0)
    return noisy.astype(np.float32)


def room_noise(seconds: float, seed: int = 0, rate: int = RATE, level_db: float = -60.0) -> np.ndarray:
    """Quiet room tone (not digital zero): pink hiss + brownish rumble + faint mains hum,
    total RMS ``level_db`` dBFS."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = (
        _colored_noise(n, rng, 1.0)
        + 0.7 * _colored_noise(n, rng, 2.0)
        + 0.15 * np.sin(2 * np.pi * 50.0 * t + rng.uniform(0, 2 * np.pi))
        + 0.05 * np.sin(2 * np.pi * 100.0 * t + rng.uniform(0, 2 * np.pi))
    )
    x *= 10 ** (level_db / 20.0) / (rms(x) or 1.0)
    return x.astype(np.float32)


def tones(seconds: float, seed: int = 0, rate: int = RATE, level_db: float = -18.0) -> np.ndarray:
    """Music-like signal: a random melody of harmonic notes with attack/decay envelopes over a
    soft chord pad. Useful as 'not speech' input for VAD / wake-word false-positive tests."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    out = np.zeros(n, np.float64)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])  # major scale, semitones from the root
    root = 220.0 * 2 ** (rng.integers(0, 12) / 12)
    pos = 0
    while pos < n:
        dur = int(rate * rng.choice([0.125, 0.25, 0.25, 0.5, 0.75]))
        freq = root * 2 ** (rng.choice(scale) / 12 + rng.integers(0, 2))
        m = min(dur, n - pos)
        t = np.arange(m) / rate
        note = sum(np.sin(2 * np.pi * freq * k * t) / k**1.5 for k in range(1, 6))
        env = np.minimum(1.0, t / 0.01) * np.exp(-3.0 * t)
        out[pos : pos + m] += note * env
        pos += dur
    t = np.arange(n) / rate
    for semis in (0, 4, 7):  # sustained chord pad
        out += 0.15 * np.sin(2 * np.pi * root / 2 * 2 ** (semis / 12) * t)
    out *= 10 ** (level_db / 20.0) / (rms(out) or 1.0)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# --- compressed formats (PyAV) ----------------------------------------------------------------

# fmt -> (container format, codec, sample format fed to the encoder, codec rates or None=any)
_ENCODERS: dict[str, tuple[str, str, str]] = {
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "s16p"),
    "opus": ("ogg", "libopus", "s16"),
    "webm": ("webm", "libopus", "s16"),
}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def encode(samples: np.ndarray, rate: int, fmt: str, bitrate: int | None = None) -> bytes:
    """Encode mono float samples to a complete file in ``fmt`` (one of ``FORMATS``:
    wav, flac, mp3, opus (Ogg/Opus), webm (WebM/Opus)) and return its bytes."""
    import av

    if fmt not in _ENCODERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    container_fmt, codec, sample_fmt = _ENCODERS[fmt]
    x = np.asarray(samples, dtype=np.float32)
    if codec == "libopus" and rate not in _OPUS_RATES:
        x, rate = resample(x, rate, 48000), 48000

    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as out:
        stream = cast(av.AudioStream, out.add_stream(codec, rate=rate))
        stream.layout = "mono"
        if bitrate is not None:
            stream.bit_rate = bitrate
        elif codec in ("libopus", "libmp3lame"):
            stream.bit_rate = 32000
        resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=rate)
        pcm = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
        block = 4096
        for i in range(0, max(len(pcm), 1), block):
            chunk = pcm[i : i + block]
            if chunk.size == 0:
                break
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for f in resampler.resample(frame):
                for packet in stream.encode(f):
                    out.mux(packet)
        for f in resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def decode(data: bytes, rate: int = RATE) -> tuple[np.ndarray, int]:
    """Decode any PyAV-readable file bytes to mono float32 at ``rate``; returns (samples, rate)."""
    import av

    parts: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r") as inp:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in inp.decode(audio=0):
            for f in resampler.resample(frame):
                parts.append(f.to_ndarray().reshape(-1))
        for f in resampler.resample(None):
            parts.append(f.to_ndarray().reshape(-1))
    x = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return x.astype(np.float32), rate


# --- scoring ----------------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w\s']|_")


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation (apostrophes inside words are removed, not split:
    "what's" -> "whats"), hyphens become spaces, collapse whitespace."""
    t = text.lower().replace("-", " ")
    t = _PUNCT.sub(" ", t).replace("'", "")
    return " ".join(t.split())


def wer(ref: str, hyp: str) -> float:
    """Word error rate after ``normalize_text`` on both sides (numbers are not spelled out).
    Empty reference: 0.0 if the hypothesis is empty too, else 1.0."""
    import jiwer

    r, h = normalize_text(ref), normalize_text(hyp)
    if not r:
        return 0.0 if not h else 1.0
    if not h:
        return 1.0
    return float(jiwer.wer(r, h))
