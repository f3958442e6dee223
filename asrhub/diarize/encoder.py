"""The speaker encoders the diarizer can use, what each needs to be told, and loading one.

``diarization.encoder`` chooses: ``"campplus"`` (:mod:`.campplus`, the default: CAM++, trained on
Chinese and English) or ``"ge2e"`` (:mod:`.ge2e`, Resemblyzer). Each maps 10 ms feature frames
to L2-normalised embeddings in its own space, so the window sizes and thresholds that cut that
space (:class:`Tuning`) are the encoder's: tuned on the tuning conversations only (seeds 0–9,
30–41, 50–69, 100–109 of ``tests/speakers.py``; the benchmark uses seeds from 200).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from asrhub import models

from .campplus import CamppEncoder
from .ge2e import Ge2eEncoder

F32 = npt.NDArray[np.float32]
EncoderName = Literal["campplus", "ge2e"]
DEFAULT: EncoderName = "campplus"


class SpeakerEncoder(Protocol):
    name: str
    dim: int
    window_frames: int
    """Feature frames of one embedding window (every window of a batch has this length)."""
    window_samples: int
    """Samples that give at least :attr:`window_frames` frames."""
    similarity_scale: float
    """The scale of cosine similarity whose softmax over speaker centroids is a confidence."""

    def features(self, samples: F32) -> F32:
        """(frames, bands) of 16 kHz audio, a frame per 10 ms."""
        ...

    def embed_windows(self, windows: F32) -> F32:
        """(batch, dim) L2-normalised embeddings of (batch, frames, bands) windows."""
        ...


@dataclass(frozen=True, slots=True)
class Tuning:
    """An encoder's cuts of its embedding space, and the windows it is given."""

    file_threshold: float
    """Files: cosine distance at which clusters stop merging (average linkage)."""
    live_threshold: float
    """Live: the same on a session's utterance embeddings (:mod:`.tracker`)."""
    same_voice: float
    """Two voices the segmentation found in one utterance, closer than this, are one person."""
    hop_frames: int
    """File windows start every this many frames."""
    chunk_frames: int
    """File speech is clustered in chunks of about this many frames (the mean of their windows)."""
    utterance_frames: int
    """An utterance's embedding: the mean of windows this long (at most; at half this hop)."""


TUNINGS: dict[str, Tuning] = {
    "ge2e": Tuning(
        file_threshold=0.26,
        live_threshold=0.26,
        same_voice=0.30,
        hop_frames=40,
        chunk_frames=240,
        utterance_frames=160,
    ),
    "campplus": Tuning(
        file_threshold=0.50,
        live_threshold=0.50,
        same_voice=0.45,
        hop_frames=50,
        chunk_frames=240,
        utterance_frames=1000,
    ),
}


def model_dir(name: str) -> Path:
    """Where ``scripts/setup.sh`` puts encoder ``name``'s weights."""
    return models.model_dir("campplus" if name == "campplus" else "resemblyzer")


def load_encoder(name: str, directory: str | Path | None = None) -> SpeakerEncoder:
    """Encoder ``name`` from ``directory`` (default: :func:`model_dir`)."""
    folder = Path(directory or model_dir(name))
    if name == "campplus":
        return CamppEncoder.load(folder)
    if name == "ge2e":
        return Ge2eEncoder.load(folder / "pretrained.pt")
    raise ValueError(f"unknown speaker encoder {name!r} (campplus or ge2e)")
