"""Oracles independent of fhe-lint: QONNX test models run by onnx's reference evaluator, and
Concrete's bit count written again from DESIGN.md with Python integers."""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun


class Quant(OpRun):
    op_domain = "onnx.brevitas"

    def _run(self, x, scale, zero_point, bit_width, signed=1, narrow=0, rounding_mode="ROUND"):
        b = float(bit_width)
        lo = -(2 ** (b - 1)) + narrow if signed else 0
        hi = 2 ** (b - 1) - 1 if signed else 2**b - 1 - narrow
        with np.errstate(divide="ignore", invalid="ignore"):  # deliberately broken scales in some tests
            q = np.clip(np.round(x / scale + zero_point), lo, hi)
            return ((q - zero_point) * scale).astype(x.dtype),


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """Evaluate ``model`` on float input ``x``; return its first output."""
    elem = model.graph.input[0].type.tensor_type.elem_type
    feed = {model.graph.input[0].name: x.astype(onnx.helper.tensor_dtype_to_np_dtype(elem))}
    return ReferenceEvaluator(model, new_ops=[Quant]).run(None, feed)[0]


def concrete_bits(lo: int, hi: int, signed: bool | None = None) -> int:
    """Bits Concrete gives the integer range ``[lo, hi]`` (signed if ``lo < 0``, or as told: a
    tensor's type is signed if any of its values is negative)."""
    if lo < 0 if signed is None else signed:
        return max((-lo - 1).bit_length() if lo < 0 else 0, hi.bit_length()) + 1
    return max(hi.bit_length(), 1)
