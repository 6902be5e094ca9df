"""Run QONNX test models with onnx's reference evaluator, an execution independent of fhe-lint."""

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
