"""The speaker encoders (issue 26): the torch-free checkpoint reader, the CAM++ ONNX converter's
segment pooling, and both encoders on real recordings (the Asterisk voices, ``tests/speakers.py``)."""

from __future__ import annotations

import itertools
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from asrhub.diarize.campplus import MODEL_FILE, model_dir
from asrhub.diarize.campplus_onnx import OPSET, SEGMENT, _Builder
from asrhub.diarize.checkpoint import load_checkpoint
from asrhub.diarize.diarizer import LIVE_THRESHOLD, Diarizer
from asrhub.diarize.encoder import TUNINGS
from asrhub.diarize.models import SpeakerModels
from asrhub.diarize.tracker import SpeakerTracker
from asrhub.models import onnx_session
from tests import speakers

CHECKPOINT = model_dir() / "campplus_cn_en_common.pt"


def _zip_checkpoint(path: Path, pickled: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/version", "3\n")
    return path


def test_a_zip_checkpoint_that_names_other_code_is_refused(tmp_path: Path) -> None:
    """CAM++'s checkpoint is a zip-format torch file: its pickle is read by the same restricted
    unpickler as GE2E's, so one naming anything else (``os.system``) is refused, never run."""
    evil = _zip_checkpoint(tmp_path / "evil.pt", b"cos\nsystem\n(S'touch pwned'\ntR.")
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()


def test_a_zip_checkpoint_with_a_storage_of_another_kind_is_refused(tmp_path: Path) -> None:
    """Only float and long storages: a pickle naming torch's other storages (here a
    ``ByteStorage``, as a tensor of raw bytes would) is refused by name."""
    pickled = b"\x80\x02}q\x00X\x01\x00\x00\x00wctorch\nByteStorage\nq\x01s."
    with pytest.raises(pickle.UnpicklingError, match="ByteStorage"):
        load_checkpoint(_zip_checkpoint(tmp_path / "bytes.pt", pickled))


def test_a_zip_checkpoint_without_its_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/version", "3\n")
    with pytest.raises(ValueError, match=r"data\.pkl"):
        load_checkpoint(path)


def test_the_campplus_checkpoint_reads_as_its_state_dict() -> None:
    weights = load_checkpoint(CHECKPOINT)
    assert weights["head.conv1.weight"].shape == (32, 1, 3, 3)
    assert weights["xvector.dense.linear.weight"].shape == (192, 1024, 1)
    assert (
        len([k for k in weights if k.startswith("xvector.block2.") and k.endswith("linear_local.weight")])
        == 24
    )
    assert all(v.dtype == np.float32 for v in weights.values())
    assert min(float(v.min()) for k, v in weights.items() if k.endswith("running_var")) > 0


@pytest.mark.parametrize("frames", [37, 100, 150, 233])
def test_segment_pooling_is_the_mean_of_each_100_frame_segment(frames: int, tmp_path: Path) -> None:
    """The converter's trickiest piece, alone in a graph on onnxruntime: each frame gets the mean
    of its 100-frame segment (the last segment shorter), as CAM++ was trained (torch's
    ``avg_pool1d(ceil_mode=True)`` spread back over the frames)."""
    builder = _Builder({})
    out = builder.segment_mean("x")
    graph = helper.make_graph(
        builder.nodes,
        "segment_mean",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "c", "t"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        builder.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    path = tmp_path / "segment.onnx"
    path.write_bytes(model.SerializeToString())
    x = np.random.default_rng(frames).standard_normal((2, 3, frames)).astype(np.float32)
    got = onnx_session(path).run(None, {"x": x})[0]
    want = np.empty_like(x)
    for start in range(0, frames, SEGMENT):
        want[..., start : start + SEGMENT] = x[..., start : start + SEGMENT].mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _utterances(name: str, count: int, rng: random.Random) -> list[np.ndarray]:
    """``count`` utterances of ≥ 3 s of one voice (its prompts joined)."""
    pool = speakers.prompts(name)
    out = []
    for _ in range(count):
        clips: list[np.ndarray] = []
        while sum(len(c) for c in clips) < 3 * 16000:
            clips.append(pool[rng.randrange(len(pool))])
        out.append(np.concatenate(clips))
    return out


@pytest.fixture(scope="module")
def voices() -> dict[str, list[np.ndarray]]:
    rng = random.Random(5)
    return {name: _utterances(name, 4, rng) for name in [*sorted(speakers.VOICES), "alsa"]}


def _margin(diarizer: Diarizer, voices: dict[str, list[np.ndarray]]) -> tuple[float, float, float]:
    """(nearest-neighbour accuracy, mean same-person cosine, mean different-people cosine)."""
    names, rows = [], []
    for name, utterances in voices.items():
        for x in utterances:
            e = diarizer.embed(x)
            assert e is not None
            names.append(name)
            rows.append(e)
    emb = np.stack(rows)
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argmax(sim, axis=1)
    right = np.mean([names[int(j)] == names[i] for i, j in enumerate(nearest)])
    same = [sim[i, j] for i, j in itertools.combinations(range(len(names)), 2) if names[i] == names[j]]
    other = [sim[i, j] for i, j in itertools.combinations(range(len(names)), 2) if names[i] != names[j]]
    return float(right), float(np.mean(same)), float(np.mean(other))


def test_campplus_puts_one_person_closer_than_two_people(voices: dict[str, list[np.ndarray]]) -> None:
    """Six real people, four utterances each: every utterance's nearest neighbour is the same
    person's, and CAM++ keeps people further apart than GE2E does (mean same-person minus mean
    different-people cosine; measured 0.55 against 0.26)."""
    campplus = SpeakerModels(encoder="campplus").get()
    assert campplus.encoder.name == "campplus"
    right, same, other = _margin(campplus, voices)
    assert right == 1.0
    assert same - other > 0.4, (same, other)
    ge2e = SpeakerModels(encoder="ge2e").get()
    assert ge2e.encoder.name == "ge2e"
    _, ge2e_same, ge2e_other = _margin(ge2e, voices)
    assert same - other > ge2e_same - ge2e_other + 0.1, (same, other, ge2e_same, ge2e_other)


def test_each_encoder_brings_its_own_thresholds() -> None:
    for name, tuning in TUNINGS.items():
        models = SpeakerModels(encoder=name)
        assert (models.threshold, models.live_threshold) == (tuning.file_threshold, tuning.live_threshold)
    assert SpeakerModels(encoder="ge2e", live_threshold=0.3).live_threshold == 0.3
    with pytest.raises(ValueError, match="unknown speaker encoder"):
        SpeakerModels(encoder="xvector")


def test_a_missing_onnx_graph_says_to_run_the_setup(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{MODEL_FILE} is missing: run scripts/setup.sh"):
        Diarizer.load(tmp_path, encoder="campplus")


def test_a_pickle_that_ends_early_is_an_error(tmp_path: Path) -> None:
    with pytest.raises((pickle.UnpicklingError, EOFError)):
        load_checkpoint(_zip_checkpoint(tmp_path / "short.pt", b"\x80\x02}q\x00(X"))


def test_a_tracker_state_of_the_other_encoder_is_forgotten_not_a_crash() -> None:
    """A session resumed from a node that ran GE2E (256-d) on one that runs CAM++ (192-d): the
    old history cannot be compared, so the next voice is a new speaker (labels already sent are
    never given again) instead of a failed stack of mismatched vectors."""
    rng = np.random.default_rng(1)
    old = SpeakerTracker(threshold=LIVE_THRESHOLD)
    for _ in range(3):
        old.label(rng.standard_normal(256).astype(np.float32))
    tracker = SpeakerTracker(threshold=LIVE_THRESHOLD)
    tracker.restore(old.state())
    e = rng.standard_normal(192).astype(np.float32)
    assert tracker.label(e / np.linalg.norm(e)) == old.next_label
    assert tracker.label(e / np.linalg.norm(e)) == old.next_label
