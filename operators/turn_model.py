"""The smart-turn v3.2 model: does the utterance so far sound like a finished turn?

The model (``smart-turn-v3.2-cpu.onnx``, BSD-2-Clause, pipecat-ai) comes from the
``pipecat-ai==1.14.0`` wheel, unpacked (hash-checked, never installed) by ``bash
scripts/setup.sh`` into ``${ASRHUB_MODEL_DIR:-~/.cache/asrhub}/pipecat/``. It reads Whisper's
80-band log-mel of exactly 8 s of 16 kHz audio (the waveform normalised to zero mean and unit
variance first) and returns the probability that the speaker has finished. Shorter audio is
padded with silence at the *start*, longer audio keeps its last 8 s, so the end of the speech is
always the end of the window. The log-mel is faster-whisper's ``FeatureExtractor`` (the same
transform the Whisper engine uses).

One ONNX Runtime session (one intra-op thread; ``run`` is thread-safe) serves every session of
its owner: the composition root gives each hub one :class:`TurnModel`, loaded at start-up when
``limits.semantic_turns`` is on. One call costs ~45 ms of one core on this machine.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from asrhub.errors import HubError
from asrhub.frames import TARGET_RATE, Samples
from asrhub.models import model_dir, onnx_session

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
WINDOW_S = 8
"""Seconds of audio the model reads (the end of the utterance)."""
THRESHOLD = 0.5
"""A probability above this is a finished turn (the model's own cut-off)."""
SETUP_HINT = "run `bash scripts/setup.sh` to fetch the smart-turn model (from the pipecat-ai wheel)"


def model_path() -> Path:
    return model_dir("pipecat") / MODEL_FILE


class TurnModel:
    """The loaded model, shared by every session of a hub (loaded once, on first need)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._session: Any = None
        self._features: Any = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Load the model (idempotent, thread-safe). A missing file raises :class:`HubError`
        naming the set-up step."""
        with self._lock:
            if self._session is not None:
                return
            path = self.path or model_path()
            if not path.is_file():
                message = f"semantic turn detection: no model at {path}; {SETUP_HINT}"
                raise HubError("provider_failed", message, fatal=True)
            from faster_whisper.feature_extractor import FeatureExtractor

            self._features = FeatureExtractor(chunk_length=WINDOW_S)
            self._session = onnx_session(path)

    def probability(self, samples: Samples) -> float:
        """P(the turn is finished) for 16 kHz mono float audio ending now (blocking: run it
        off the event loop). Loads the model on first use."""
        if self._session is None:
            self.load()
        n = WINDOW_S * TARGET_RATE
        x = np.asarray(samples, dtype=np.float32)[-n:]
        if len(x) < n:
            x = np.concatenate((np.zeros(n - len(x), np.float32), x))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        mel = self._features(x, padding=0)[:, : WINDOW_S * 100]
        out = self._session.run(None, {"input_features": mel[None].astype(np.float32)})
        return float(out[0][0, 0])
