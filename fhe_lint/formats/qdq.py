"""The QDQ format (onnxruntime ``quantize_static``'s default): ``QuantizeLinear`` /
``DequantizeLinear`` pairs around float ops.

``QuantizeLinear(x, scale, zp)`` computes ``saturate(round(x / scale) + zp)`` into the integer
type of ``zp`` (uint8 by default); ``DequantizeLinear(q, scale, zp)`` reads integers. As with
QONNX, the accumulator sees the raw integers: the integer type's range, whatever ``zp`` is. The
element-type helpers serve the QOperator format too (same integer types).
"""

from __future__ import annotations

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.formats.graph import Graph, attr, optional_input
from fhe_lint.formats.ops import TYPE_KEEPING_OPS
from fhe_lint.formats.quantizer import InputRange, IntRange, Quantizer, const_param, scalar_params, scalar_zero_point
from fhe_lint.io.onnx_proto import NodeProto, TensorProto

# ONNX integer element types -> (range, bits)
INT_TYPES: dict[int, tuple[IntRange, int]] = {
    TensorProto.INT8: (IntRange(-128, 127), 8),
    TensorProto.UINT8: (IntRange(0, 255), 8),
    TensorProto.INT16: (IntRange(-(2**15), 2**15 - 1), 16),
    TensorProto.UINT16: (IntRange(0, 2**16 - 1), 16),
    TensorProto.INT32: (IntRange(-(2**31), 2**31 - 1), 32),
    TensorProto.UINT32: (IntRange(0, 2**32 - 1), 32),
    TensorProto.INT4: (IntRange(-8, 7), 4),
    TensorProto.UINT4: (IntRange(0, 15), 4),
}


# QOperator ops whose output is an integer tensor typed by their output zero-point input.
_OUTPUT_ZERO_POINT = {"QLinearConv": 7, "QLinearMatMul": 7, "QGemm": 8, "QLinearAdd": 7, "QLinearMul": 7,
                      "QLinearAveragePool": 4, "QLinearGlobalAveragePool": 4, "QLinearConcat": 1}


def elem_type(graph: Graph, tensor: str) -> int | None:
    """The ONNX element type of an integer tensor, found from whatever defines it."""
    while True:
        if graph.is_const(tensor):
            return graph.const_proto(tensor).data_type
        node = graph.producer.get(tensor)
        if node is None:
            return graph.declared_type(tensor)
        op = node.op_type
        if op == "QuantizeLinear":
            out = attr(node, "output_dtype", 0)
            if out:
                return out
            zp = optional_input(node, 2)
            return graph.const_proto(zp).data_type if zp and graph.is_const(zp) else TensorProto.UINT8
        if op == "DynamicQuantizeLinear":
            return TensorProto.UINT8
        if op in _OUTPUT_ZERO_POINT:
            zp = optional_input(node, _OUTPUT_ZERO_POINT[op])
            return graph.const_proto(zp).data_type if zp and graph.is_const(zp) else TensorProto.UINT8
        if op not in TYPE_KEEPING_OPS:
            return graph.declared_type(tensor)
        tensor = next((t for t in node.input if t and not graph.is_const(t)), node.input[0])


def int_range(graph: Graph, tensor: str, where: str) -> tuple[IntRange, int]:
    kind = elem_type(graph, tensor)
    if kind not in INT_TYPES:
        name = TensorProto.DataType.Name(kind) if kind in TensorProto.DataType.values() else kind
        raise UnsupportedModelError(f"{where}: integer type {name} of {tensor!r} is not supported")
    return INT_TYPES[kind]


def _per_axis(graph: Graph, node: NodeProto, value: np.ndarray, ndim: int) -> np.ndarray:
    """Reshape a 1-D per-axis scale/zero-point so it broadcasts along ``axis`` (default 1)."""
    if value.ndim == 0 or ndim == 0:
        return value
    if attr(node, "block_size", 0):
        raise UnsupportedModelError(f"{graph.name(node)}: blocked quantization is not supported")
    axis = attr(node, "axis", 1) % ndim
    shape = [1] * ndim
    shape[axis] = value.size
    return value.reshape(shape)


def weight_quantizer(graph: Graph, node: NodeProto, ndim: int, integer_source: bool) -> Quantizer:
    """The quantizer of a weight behind a QuantizeLinear (float source) or DequantizeLinear (int)."""
    name = graph.name(node)
    scale = const_param(graph, node, 1, "scale")
    if scale is None or (scale <= 0).any():
        raise UnsupportedModelError(f"{name}: scale must be positive")
    zp = const_param(graph, node, 2, "zero-point")
    zp = np.zeros(()) if zp is None else zp
    grid, bits = int_range(graph, node.output[0] if node.op_type == "QuantizeLinear" else node.input[0], name)
    return Quantizer(name, bits, grid, _per_axis(graph, node, scale, ndim), _per_axis(graph, node, zp, ndim),
                     "ROUND", integer_source=integer_source)


def output_range(graph: Graph, node: NodeProto) -> InputRange | None:
    """The integers a ``DequantizeLinear`` reads (None: the node is none)."""
    if node.op_type != "DequantizeLinear":
        return None
    grid, bits = int_range(graph, node.input[0], graph.name(node))
    return InputRange(grid, bits, (graph.name(node),), scalar_params(graph, node))


def runtime(graph: Graph, data: str, bias: str) -> tuple[int, np.ndarray | None] | None:
    """onnxruntime runs a QDQ layer as ``sum (x - zp_x)(w - zp_w) + bias_int32``: the zero-point of
    the ``DequantizeLinear`` in front of ``data`` and the integers behind the ``bias`` input."""
    dq = graph.producer.get(data)
    if dq is None or dq.op_type != "DequantizeLinear":
        return None
    bq = graph.producer.get(bias) if bias else None
    values = None
    if bq is not None and bq.op_type == "DequantizeLinear" and graph.is_const(bq.input[0]):
        values = graph.const(bq.input[0]).astype(np.int64).ravel()
    zp = scalar_zero_point(graph, dq.input[2] if len(dq.input) > 2 else "")
    return None if zp is None else (zp, values)
