"""What the user's data actually drives each accumulator to, next to the static worst case.

Concrete ML compiles over a calibration set: a layer whose observed range fits while its worst
case does not is a silent overflow waiting for the wrong input.
"""

from __future__ import annotations

import numpy as np
import onnx

from fhe_lint.analysis.accumulators import LayerAnalysis, ModelAnalysis
from fhe_lint.formats.channels_last import as_channels_first, is_channels_last
from fhe_lint.analysis.execute import evaluate
from fhe_lint.analysis.taps import data_input, tap_groups
from fhe_lint.formats.quantizer import IntRange

_FLOAT_OPS = frozenset({"Gemm", "MatMul", "Conv", "ConvTranspose"})


def _measurable(la: LayerAnalysis) -> bool:
    layer = la.layer
    return (la.bounds is not None and layer.weight is not None and layer.op in _FLOAT_OPS
            and (layer.node.domain in ("", "ai.onnx") or is_channels_last(layer.node))
            and layer.input.scale_zero_point is not None)


def _integer_op(la: LayerAnalysis, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The layer's own op on integer-valued float64 tensors, without bias or alpha: the accumulator."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    layer = la.layer
    node = onnx.NodeProto()
    node.CopyFrom(layer.node)
    operand = layer.weight.operand
    inputs = ["x", "w"] if operand == 1 else ["w", "x"]
    del node.input[:]
    node.input.extend(inputs)
    del node.output[:]
    node.output.append("acc")
    for a in node.attribute:
        if a.name == "alpha":
            a.f = 1.0
    graph = helper.make_graph([node], "acc", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, None)],
                              [helper.make_tensor_value_info("acc", TensorProto.DOUBLE, None)],
                              initializer=[numpy_helper.from_array(w, "w")])
    model = as_channels_first(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def observed_ranges(analysis: ModelAnalysis, data: np.ndarray) -> dict[str, IntRange]:
    """Per layer, the integer accumulator range over ``data`` (bias and input zero-point excluded,
    as in the static bound)."""
    layers = [la for la in analysis.layers if _measurable(la)]
    if not layers:
        return {}
    values = evaluate(analysis.graph.standalone(), data, [data_input(la) for la in layers])
    out = {}
    for la, x in zip(layers, values):
        scale, zp = la.layer.input.scale_zero_point
        q = np.round(x.astype(np.float64) / scale + zp)
        weight = la.layer.weight
        w = weight.as_operand(weight.quantizer.levels(weight.source_values)).astype(np.float64)
        acc = _integer_op(la, q, w)
        out[la.name] = IntRange(int(np.round(acc.min())), int(np.round(acc.max())))
    return out


def tap_activity(analysis: ModelAnalysis, data: np.ndarray) -> dict[str, np.ndarray]:
    """Per layer, mean |x| that each tap multiplies, as (neurons, fan_in): the activation-aware
    pruning order removes the taps with the smallest |w| * mean|x| first."""
    layers = [la for la in analysis.layers if _measurable(la) and la.layer.op in ("Gemm", "MatMul", "Conv")]
    if not layers:
        return {}
    out = {}
    for la, x in zip(layers, evaluate(analysis.graph.standalone(), data, [data_input(la) for la in layers])):
        activity = np.empty(la.layer.weight.d.shape)
        for neurons, taps in tap_groups(la, x):
            activity[neurons] = np.abs(taps).mean(axis=0)
        out[la.name] = activity
    return out
