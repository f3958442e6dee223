"""``resample``: AudioChunks at any rate → AudioChunks at ``target_rate``, chunk by chunk.

::

    in (44.1 kHz):  --a0------a1---e---a2--|
    resample:       --b0------b1---e---b2--(b3:tail)|      b_n at 16 kHz, start = out samples / rate

Polyphase FIR resampling with the filter ``scipy.signal.resample_poly`` designs (Kaiser window,
β = 5, 10 zero crossings per side), applied with ``scipy.signal.upfirdn`` to the new chunk plus a
short history of past input, so the output equals ``resample_poly`` over the whole stream
(within float32 rounding) however the stream is cut into chunks. The filter's look-ahead
(``half_len / up`` input samples, under 1 ms) stays behind until the next chunk; completion
flushes it (the whole-signal zero padding at the end). Chunks already at ``target_rate`` pass
through as the same object (no copy). Other frames pass through in order, behind the audio
resampled so far. Bound: the history is ``2 * half_len / up + down`` input samples.

Odd rates: the filter has ``20 * max(up, down)`` taps, so a rate like 383999 Hz (up/down =
16000/383999) would cost a 7.7-million-tap design (1.5 s of event loop, 30 MB per cached rate).
Past ``MAX_FACTOR`` the ratio is replaced by the nearest one with both terms within it: every
common rate pair stays exact; an odd rate (44101 Hz, 7919 Hz) gets a rate error of at most
1.1e-4 (0.4 s per hour of stream time), and its filter costs at most 82k taps (13 ms, 330 KB).

``scipy.signal`` is imported when the first stream or file that needs resampling comes (a hub
prepares it off the event loop for a session whose PCM is not at 16 kHz: :func:`load_filters`),
not with this module: it holds ~65 MB that a hub whose audio all arrives at 16 kHz never uses
(docs/benchmarks.md, "Memory against the nearest peer").
"""

from __future__ import annotations

import sys
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
from reactivex import Observable, abc

from asrhub.flow import Stage
from asrhub.frames import AudioChunk, Frame, Samples
from asrhub.plugin import Operator

MAX_FACTOR = 4096
"""Largest up or down factor (common rate pairs need at most 2560: 11025 Hz → 192 kHz)."""


def ratio(rate_in: int, rate_out: int) -> Fraction:
    """``rate_out / rate_in``, or the closest fraction whose terms are at most ``MAX_FACTOR``."""
    exact = Fraction(rate_out, rate_in)
    if max(exact.numerator, exact.denominator) <= MAX_FACTOR:
        return exact
    if exact < 1:
        return exact.limit_denominator(MAX_FACTOR)
    return 1 / (1 / exact).limit_denominator(MAX_FACTOR)


def filters_loaded() -> bool:
    """Whether the filter library (``scipy.signal``) is imported."""
    return "scipy.signal" in sys.modules


def load_filters() -> Any:
    """``scipy.signal`` (blocking: imported on first use, ~0.5 s)."""
    import scipy.signal

    return scipy.signal


@lru_cache(maxsize=64)
def _design(up: int, down: int) -> tuple[Samples, int]:
    """The filter ``resample_poly`` uses for up/down, shared by every session."""
    if up == down:  # a rate within 1/MAX_FACTOR of the target, rounded to it: copy
        identity = np.ones(1, np.float32)
        identity.flags.writeable = False
        return identity, 0
    half_len = 10 * max(up, down)
    h = load_filters().firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0)) * up
    h = h.astype(np.float32)
    h.flags.writeable = False
    return h, half_len


class Resampler:
    """Streaming ``resample_poly``: ``process`` per chunk, ``flush`` at the end of the stream."""

    __slots__ = ("_buf", "_down", "_h", "_half", "_inv", "_m", "_n", "_s", "_up", "_upfirdn")

    def __init__(self, rate_in: int, rate_out: int) -> None:
        r = ratio(rate_in, rate_out)
        self._up, self._down = r.numerator, r.denominator
        self._h, self._half = _design(self._up, self._down)
        self._upfirdn = load_filters().upfirdn
        self._inv = pow(self._up, -1, self._down) if self._down > 1 else 0
        self._n = 0  # input samples received
        self._m = 0  # output samples produced
        self._s = self._aligned(-self._half // self._up)  # global input index of _buf[0] (≤ 0: zeros)
        self._buf = np.zeros(-self._s, np.float32)

    def _aligned(self, k: int) -> int:
        """The largest s ≤ k with (half_len - s*up) divisible by down: outputs then fall on upfirdn's grid."""
        if self._down == 1:
            return k
        return k - (k - self._half * self._inv) % self._down

    def process(self, x: Samples) -> Samples:
        self._buf = np.concatenate((self._buf, x.astype(np.float32, copy=False)))
        self._n += len(x)
        return self._run(-(-(self._n * self._up - self._half) // self._down))

    def flush(self) -> Samples:
        return self._run(-(-(self._n * self._up) // self._down))

    def _run(self, m_end: int) -> Samples:
        up, down, m0 = self._up, self._down, self._m
        if m_end <= m0:
            return np.zeros(0, np.float32)
        w = self._upfirdn(self._h, self._buf, up, down)
        i0 = m0 + (self._half - self._s * up) // down
        out = np.asarray(w[i0 : i0 + (m_end - m0)], dtype=np.float32)
        self._m = m_end
        s_new = self._aligned(-(-(m_end * down - self._half) // up))  # oldest input the next output needs
        self._buf = self._buf[s_new - self._s :]
        self._s = s_new
        return out


def resample(target_rate: int = 16_000) -> Operator:
    def operator(source: Observable[Frame]) -> Observable[Frame]:
        def subscribe(observer: abc.ObserverBase[Frame], scheduler: Any = None) -> abc.DisposableBase:
            rs: Resampler | None = None
            rate_in, out_n, seq = 0, 0, 0
            rewrap = False  # after any resampling, chunks at the target rate get our start/seq too

            def emit(y: Samples) -> None:
                nonlocal out_n, seq
                if len(y):
                    observer.on_next(AudioChunk(y, target_rate, out_n / target_rate, seq))
                    out_n += len(y)
                    seq += 1

            def on_next(frame: Frame) -> None:
                nonlocal rs, rate_in, out_n, rewrap
                if not isinstance(frame, AudioChunk):
                    observer.on_next(frame)
                    return
                try:
                    if frame.sample_rate != rate_in:  # the first chunk, or the source changed rate
                        if rs is not None:
                            emit(rs.flush())
                        rate_in = frame.sample_rate
                        rs = Resampler(rate_in, target_rate) if rate_in != target_rate else None
                        rewrap = rewrap or rs is not None
                        out_n = max(out_n, round(frame.start * target_rate))
                    if rs is not None:
                        emit(rs.process(frame.samples))
                    elif rewrap:
                        emit(frame.samples)
                    else:
                        observer.on_next(frame)  # hot path: already at the target rate, zero copy
                except Exception as exc:
                    observer.on_error(exc)

            def on_completed() -> None:
                if rs is not None:
                    emit(rs.flush())
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Stage(subscribe)

    return operator
