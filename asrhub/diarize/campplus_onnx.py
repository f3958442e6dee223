"""CAM++'s checkpoint as an ONNX graph: run once by ``scripts/setup.sh``, never by the hub.

``python -m asrhub.diarize.campplus_onnx CHECKPOINT OUTPUT`` reads ``campplus_cn_en_common.pt``
torch-free (:func:`~.checkpoint.load_checkpoint`), builds the network with the ``onnx`` package's
helper API, checks it (``onnx.checker``, full) and writes it (atomically). Every BatchNorm that
follows a convolution is folded into it; one that precedes a ReLU and a convolution (the dense
blocks' pre-activation) becomes a per-channel scale and shift.

The network (Wang et al., "CAM++: A Fast and Efficient Network for Speaker Verification Using
Context-Aware Masking", Interspeech 2023; 3D-Speaker's ``campplus`` model): input ``fbank``
(batch, frames, 80), output ``embedding`` (batch, 192), not normalised.

* a 2-D front end over (frequency, time): a 3×3 convolution (32 channels), two stages of two
  residual blocks that halve the frequency axis at their first block, a 3×3 convolution that
  halves it again: 80 bands → 10, flattened to 320 channels;
* a TDNN layer (kernel 5, stride 2: half the frames), 128 channels;
* three densely connected blocks of CAM layers (12, 24 and 16 layers; growth 32; dilation 1, 2,
  2), each followed by a transit layer that halves the channels. A CAM layer is BN-ReLU-1×1
  conv (128)-BN-ReLU, then a dilated 3-tap convolution masked by a sigmoid of its input's mean
  over the whole input plus its mean over 100-frame segments;
* BN-ReLU, statistics pooling (mean and unbiased standard deviation over time), a linear layer
  to 192 and a BatchNorm without affine parameters.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from .checkpoint import load_checkpoint

F32 = npt.NDArray[np.float32]
OPSET = 17
EPS = 1e-5
"""BatchNorm's epsilon (torch's default, as trained)."""
SEGMENT = 100
"""Frames of a CAM layer's segment pooling."""
BLOCKS = ((12, 1), (24, 2), (16, 2))
"""(layers, dilation) of each dense block."""
INPUT = "fbank"
OUTPUT = "embedding"


class _Builder:
    def __init__(self, weights: dict[str, F32]) -> None:
        self.w = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: npt.ArrayLike, stem: str = "c", dtype: Any = np.float32) -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, kind: str, inputs: list[str], stem: str | None = None, **attrs: Any) -> str:
        out = self.name(stem or kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def bn(self, prefix: str) -> tuple[F32, F32]:
        """(scale, shift) of the inference BatchNorm ``prefix`` (no affine part: 1 and 0)."""
        mean, var = self.w[f"{prefix}.running_mean"], self.w[f"{prefix}.running_var"]
        gamma = self.w.get(f"{prefix}.weight", np.ones_like(mean))
        beta = self.w.get(f"{prefix}.bias", np.zeros_like(mean))
        scale = gamma / np.sqrt(var + EPS)
        return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)

    def conv_bn(self, x: str, conv: str, bn: str | None, **attrs: Any) -> str:
        """A convolution without bias, with the BatchNorm after it (if any) folded in."""
        weight = self.w[f"{conv}.weight"]
        bias = self.w.get(f"{conv}.bias")
        if bn is not None:
            scale, shift = self.bn(bn)
            weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
            shift = shift + (0 if bias is None else bias * scale)
            bias = shift
        inputs = [x, self.const(weight, "w")]
        if bias is not None:
            inputs.append(self.const(bias, "b"))
        return self.op("Conv", inputs, **attrs)

    def bn_relu(self, x: str, bn: str, rank: int = 3) -> str:
        """BatchNorm then ReLU, as a per-channel scale and shift on (batch, channels, …)."""
        scale, shift = self.bn(bn)
        shape = (-1, *([1] * (rank - 2)))
        y = self.op("Mul", [x, self.const(scale.reshape(shape))])
        return self.op("Relu", [self.op("Add", [y, self.const(shift.reshape(shape))])])

    def res_block(self, x: str, prefix: str, stride: int) -> str:
        pads = [1, 1, 1, 1]
        y = self.op(
            "Relu", [self.conv_bn(x, f"{prefix}.conv1", f"{prefix}.bn1", pads=pads, strides=[stride, 1])]
        )
        y = self.conv_bn(y, f"{prefix}.conv2", f"{prefix}.bn2", pads=pads)
        if f"{prefix}.shortcut.0.weight" in self.w:
            x = self.conv_bn(x, f"{prefix}.shortcut.0", f"{prefix}.shortcut.1", strides=[stride, 1])
        return self.op("Relu", [self.op("Add", [y, x])])

    def segment_mean(self, x: str) -> str:
        """Each frame's mean over its :data:`SEGMENT`-frame segment (the last one shorter)."""
        frames = self.op("Gather", [self.op("Shape", [x]), self.const([2], dtype=np.int64)], axis=0)
        seg = self.const([SEGMENT], dtype=np.int64)
        pad = self.op("Mod", [self.op("Sub", [seg, self.op("Mod", [frames, seg])]), seg])
        zeros = self.const([0, 0, 0, 0, 0], dtype=np.int64)
        pads = self.op("Concat", [zeros, pad], axis=0)
        padded = self.op("Pad", [x, pads])
        shape = self.const([0, 0, -1, SEGMENT], dtype=np.int64)
        sums = self.op("ReduceSum", [self.op("Reshape", [padded, shape]), self.const([3], dtype=np.int64)])
        ones = self.op(
            "Pad",
            [
                self.op(
                    "ConstantOfShape",
                    [self.op("Concat", [self.const([1, 1], dtype=np.int64), frames], axis=0)],
                    value=numpy_helper.from_array(np.ones(1, np.float32)),
                ),
                pads,
            ],
        )
        counts = self.op("ReduceSum", [self.op("Reshape", [ones, shape]), self.const([3], dtype=np.int64)])
        means = self.op("Div", [sums, counts])  # (batch, channels, segments, 1)
        spread = self.op("Expand", [means, self.const([1, 1, 1, SEGMENT], dtype=np.int64)])
        flat = self.op("Reshape", [spread, self.const([0, 0, -1], dtype=np.int64)])
        return self.op(
            "Slice", [flat, self.const([0], dtype=np.int64), frames, self.const([2], dtype=np.int64)]
        )

    def cam_layer(self, x: str, prefix: str, dilation: int) -> str:
        h = self.bn_relu(x, f"{prefix}.nonlinear1.batchnorm")
        h = self.conv_bn(h, f"{prefix}.linear1", f"{prefix}.nonlinear2.batchnorm")
        h = self.op("Relu", [h])
        cam = f"{prefix}.cam_layer"
        local = self.conv_bn(h, f"{cam}.linear_local", None, pads=[dilation, dilation], dilations=[dilation])
        context = self.op("Add", [self.op("ReduceMean", [h], axes=[2], keepdims=1), self.segment_mean(h)])
        gate = self.op("Relu", [self.conv_bn(context, f"{cam}.linear1", None)])
        gate = self.op("Sigmoid", [self.conv_bn(gate, f"{cam}.linear2", None)])
        return self.op("Mul", [local, gate])

    def build(self) -> onnx.ModelProto:
        x = self.op("Transpose", [INPUT], perm=[0, 2, 1])  # (batch, 80, frames)
        x = self.op("Unsqueeze", [x, self.const([1], dtype=np.int64)])  # (batch, 1, 80, frames)
        x = self.op("Relu", [self.conv_bn(x, "head.conv1", "head.bn1", pads=[1, 1, 1, 1])])
        for stage in ("layer1", "layer2"):
            x = self.res_block(x, f"head.{stage}.0", 2)
            x = self.res_block(x, f"head.{stage}.1", 1)
        x = self.op("Relu", [self.conv_bn(x, "head.conv2", "head.bn2", pads=[1, 1, 1, 1], strides=[2, 1])])
        channels = self.w["xvector.tdnn.linear.weight"].shape[1]
        x = self.op("Reshape", [x, self.const([0, channels, -1], dtype=np.int64)])
        x = self.conv_bn(
            x, "xvector.tdnn.linear", "xvector.tdnn.nonlinear.batchnorm", pads=[2, 2], strides=[2]
        )
        x = self.op("Relu", [x])
        for b, (layers, dilation) in enumerate(BLOCKS, start=1):
            for k in range(1, layers + 1):
                x = self.op("Concat", [x, self.cam_layer(x, f"xvector.block{b}.tdnnd{k}", dilation)], axis=1)
            x = self.bn_relu(x, f"xvector.transit{b}.nonlinear.batchnorm")
            x = self.conv_bn(x, f"xvector.transit{b}.linear", None)
        x = self.bn_relu(x, "xvector.out_nonlinear.batchnorm")
        mean = self.op("ReduceMean", [x], axes=[2], keepdims=0)
        centred = self.op("Sub", [x, self.op("ReduceMean", [x], axes=[2], keepdims=1)])
        squares = self.op(
            "ReduceSum", [self.op("Mul", [centred, centred]), self.const([2], dtype=np.int64)], keepdims=0
        )
        frames = self.op(
            "Cast",
            [self.op("Gather", [self.op("Shape", [x]), self.const(2, dtype=np.int64)], axis=0)],
            to=TensorProto.FLOAT,
        )
        dof = self.op("Max", [self.op("Sub", [frames, self.const(1.0)]), self.const(1.0)])
        std = self.op("Sqrt", [self.op("Div", [squares, dof])])
        stats = self.op("Concat", [mean, std], axis=1)  # (batch, 2 × channels)
        weight = self.w["xvector.dense.linear.weight"][:, :, 0]
        scale, shift = self.bn("xvector.dense.nonlinear.batchnorm")
        out = self.op("Gemm", [stats, self.const(weight * scale[:, None]), self.const(shift)], transB=1)
        self.nodes.append(helper.make_node("Identity", [out], [OUTPUT]))
        dim = weight.shape[0]
        graph = helper.make_graph(
            self.nodes,
            "campplus",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", "frames", 80])],
            [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", dim])],
            self.inits,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="asrhub"
        )
        model.ir_version = 8
        return model


def convert(checkpoint: str | Path, output: str | Path) -> Path:
    """Build, check and write the ONNX graph of ``checkpoint``; returns ``output``."""
    model = _Builder(load_checkpoint(checkpoint)).build()
    onnx.checker.check_model(model, full_check=True)
    output = Path(output)
    part = output.with_name(output.name + ".part")
    onnx.save_model(model, str(part))
    os.replace(part, output)
    return output


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m asrhub.diarize.campplus_onnx CHECKPOINT OUTPUT", file=sys.stderr)
        return 2
    convert(args[0], args[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
