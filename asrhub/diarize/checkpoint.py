"""Torch checkpoints of plain tensors read without torch: a restricted unpickler builds numpy arrays.

Two formats, told apart by their first bytes:

* the legacy one (torch < 1.6; Resemblyzer's ``pretrained.pt``): three plain pickles (magic
  number, protocol version, system info), the pickle of the state, the list of its storages'
  keys, then each storage's raw bytes (an 8-byte element count first);
* the zip one (torch ≥ 1.6; CAM++'s ``campplus_cn_en_common.pt``): ``<name>/data.pkl`` holds the
  pickle, ``<name>/data/<key>`` each storage's raw little-endian bytes.

Either pickle may name only what a state dict of float (and long: BatchNorm's
``num_batches_tracked``) tensors needs — ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``, ``torch.LongStorage`` — anything
else is refused (:class:`pickle.UnpicklingError`), so a tampered file cannot run code. Every
tensor comes back as a float32 array.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


class _FloatStorage:  # markers the pickle names
    dtype = np.dtype("<f4")


class _LongStorage:
    dtype = np.dtype("<i8")


class _Storage:
    def __init__(self, kind: type[_FloatStorage] | type[_LongStorage], numel: int) -> None:
        self.dtype = kind.dtype
        self.numel = numel
        self.data: npt.NDArray[Any] | None = None

    def fill(self, raw: bytes, key: str) -> None:
        if len(raw) != self.numel * self.dtype.itemsize:
            raise ValueError(
                f"storage {key}: {len(raw)} bytes, expected {self.numel} × {self.dtype.itemsize}"
            )
        self.data = np.frombuffer(raw, dtype=self.dtype)


@dataclass
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> F32:
        data = self.storage.data
        if data is None:
            raise ValueError("a tensor whose storage is missing from the checkpoint")
        if self.size:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
            if min(self.size) > 0 and (self.offset < 0 or last >= len(data)):
                raise ValueError(f"a tensor of size {self.size} reaches past its storage")
        base = data[self.offset :]
        view = np.lib.stride_tricks.as_strided(
            base, shape=self.size, strides=tuple(s * base.itemsize for s in self.stride)
        )
        return np.array(view, dtype=np.float32)  # a copy: the big storage can go


def _rebuild(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _refused(module: str, name: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"unexpected {module}.{name} in a checkpoint of plain tensors")


class _Plain(pickle.Unpickler):
    """Plain values only (ints, strings, lists, dicts): any class is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise _refused(module, name)


class _Unpickler(pickle.Unpickler):
    _ALLOWED: dict[tuple[str, str], Any] = {  # noqa: RUF012
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild,
        ("torch", "FloatStorage"): _FloatStorage,
        ("torch", "LongStorage"): _LongStorage,
    }

    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise _refused(module, name) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not isinstance(pid, tuple) or (len(pid) != 5 and len(pid) != 6):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or storage_type not in (_FloatStorage, _LongStorage):
            raise pickle.UnpicklingError(f"unexpected storage {kind!r} {storage_type!r}")
        return self.storages.setdefault(str(key), _Storage(storage_type, int(numel)))


def _legacy(f: IO[bytes]) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    for _ in range(3):  # magic number, protocol version, system info: plain values
        _Plain(f).load()
    state = _Unpickler(f, storages).load()
    keys = _Plain(f).load()  # the storages' keys, in the order their data follows
    for key in keys:
        (numel,) = struct.unpack("<q", f.read(8))
        storage = storages[str(key)]
        storage.fill(f.read(numel * storage.dtype.itemsize), str(key))
    return state, storages


def _zipped(path: Path) -> tuple[Any, dict[str, _Storage]]:
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as z:
        pickles = [n for n in z.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path}: not a torch zip checkpoint (no single <name>/data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if z.namelist().count(prefix + "byteorder") and z.read(prefix + "byteorder") != b"little":
            raise ValueError(f"{path}: a big-endian checkpoint")
        state = _Unpickler(io.BytesIO(z.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            storage.fill(z.read(f"{prefix}data/{key}"), key)
    return state, storages


def load_checkpoint(path: str | Path) -> dict[str, F32]:
    """The float32 tensors of a checkpoint's state dict (its ``model_state`` when it has one),
    by name."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        state, _ = _zipped(path)
    else:
        with open(path, "rb") as f:
            state, _ = _legacy(f)
    if isinstance(state, dict) and "model_state" in state:
        state = state["model_state"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the checkpoint holds a {type(state).__name__}, not a state dict")
    return {str(name): t.array() for name, t in state.items() if isinstance(t, _Tensor)}
