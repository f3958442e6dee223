"""The GE2E speaker encoder of Resemblyzer (Apache-2.0), run with numpy: no torch.

The weights are the ``pretrained.pt`` of the PyPI wheel ``resemblyzer==0.1.4``, extracted by
``scripts/setup.sh`` (hash-checked) into ``${ASRHUB_MODEL_DIR:-~/.cache/asrhub}/resemblyzer/``:
a legacy (pre-zip) torch checkpoint, read torch-free by :func:`~.checkpoint.load_checkpoint`
(a restricted unpickler: a tampered file cannot run code).

The network (Wan et al., "Generalized End-to-End Loss for Speaker Verification", 2018): 40 mel
bands (25 ms windows, 10 ms hop, power spectrum), a 3-layer LSTM of 256 units, a linear layer to
256, ReLU, L2 norm. One embedding per 1.6 s window (160 frames); an utterance's embedding is the
normalised mean of its windows'. Cost on one core: ~15 ms per window in a batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from .checkpoint import load_checkpoint

F32 = npt.NDArray[np.float32]

RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 40
WINDOW_FRAMES = 160
"""Frames of one embedding window (1.6 s), as the network was trained."""
LAYERS = 3
HIDDEN = 256
TARGET_RMS = 10 ** (-30 / 20)
"""Loudness the encoder was trained at (-30 dBFS): :meth:`Ge2eEncoder.features` brings audio there."""


def _hz_to_mel(f: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale (linear below 1 kHz, logarithmic above), as librosa's default."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filters() -> F32:
    """(40, 201) triangular filters, Slaney-normalised: the filterbank the network was trained on."""
    fft_freqs = np.linspace(0, RATE / 2, N_FFT // 2 + 1)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(RATE / 2.0)), N_MELS + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2 : N_MELS + 2] - mel_pts[:N_MELS]))[:, None]
    return weights.astype(np.float32)


_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann


def mel_frames(samples: F32) -> F32:
    """(frames, 40) mel power spectrogram of 16 kHz audio, one frame per 10 ms (centred frames,
    zero padding), as ``librosa.feature.melspectrogram`` computes it for Resemblyzer."""
    x = np.pad(np.asarray(samples, dtype=np.float32), N_FFT // 2)
    n = 1 + (len(x) - N_FFT) // HOP
    if n <= 0:
        return np.zeros((0, N_MELS), np.float32)
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * _WINDOW, axis=1)) ** 2
    return (spec.astype(np.float32) @ _MELS.T).astype(np.float32)


_MELS = mel_filters()


def _sigmoid(x: F32) -> F32:
    out: F32 = 0.5 * (np.tanh(0.5 * x) + 1.0)
    return out


def _normalised(x: F32) -> F32:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    if rms < 1e-5:
        return x
    return (x * (TARGET_RMS / rms)).astype(np.float32)


class Ge2eEncoder:
    """The loaded network: :meth:`embed_windows` maps (B, 160, 40) mel windows to (B, 256)."""

    name = "ge2e"
    dim = HIDDEN
    window_frames = WINDOW_FRAMES
    window_samples = WINDOW_FRAMES * HOP

    def __init__(self, weights: dict[str, F32]) -> None:
        self.layers: list[tuple[F32, F32, F32]] = []
        for k in range(LAYERS):
            w_ih, w_hh = weights[f"lstm.weight_ih_l{k}"], weights[f"lstm.weight_hh_l{k}"]
            bias = weights[f"lstm.bias_ih_l{k}"] + weights[f"lstm.bias_hh_l{k}"]
            self.layers.append((np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), bias))
        self.linear_w = np.ascontiguousarray(weights["linear.weight"].T)
        self.linear_b = weights["linear.bias"]
        self.similarity_weight = float(weights["similarity_weight"][0])
        """GE2E's learned scale of cosine similarity: softmax(w·cos) over speaker centroids is the
        probability the network was trained to give (the bias cancels out)."""
        self.similarity_scale = self.similarity_weight

    @classmethod
    def load(cls, path: str | Path) -> Ge2eEncoder:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"{path} is missing: run scripts/setup.sh (it extracts the speaker model)"
            )
        return cls(load_checkpoint(path))

    @staticmethod
    def features(samples: F32) -> F32:
        """Mel frames of ``samples`` brought to -30 dBFS (as the network was trained)."""
        return mel_frames(_normalised(np.asarray(samples, np.float32)))

    def embed_windows(self, mels: F32) -> F32:
        """L2-normalised embeddings of a batch of (160-frame) mel windows."""
        x = np.asarray(mels, dtype=np.float32)
        batch, steps, _ = x.shape
        if batch == 0:
            return np.zeros((0, HIDDEN), np.float32)
        h = np.zeros((batch, HIDDEN), np.float32)
        for w_ih, w_hh, bias in self.layers:
            gates_in = (x.reshape(batch * steps, -1) @ w_ih + bias).reshape(batch, steps, 4 * HIDDEN)
            h = np.zeros((batch, HIDDEN), np.float32)
            c = np.zeros((batch, HIDDEN), np.float32)
            out = np.empty((batch, steps, HIDDEN), np.float32)
            for t in range(steps):
                g = gates_in[:, t] + h @ w_hh
                i, f = _sigmoid(g[:, :HIDDEN]), _sigmoid(g[:, HIDDEN : 2 * HIDDEN])
                cell, o = np.tanh(g[:, 2 * HIDDEN : 3 * HIDDEN]), _sigmoid(g[:, 3 * HIDDEN :])
                c = f * c + i * cell
                h = o * np.tanh(c)
                out[:, t] = h
            x = out
        raw = np.maximum(h @ self.linear_w + self.linear_b, 0.0)
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        embeddings: F32 = (raw / np.maximum(norm, 1e-8)).astype(np.float32)
        return embeddings
