"""ONNX's own quantization ops (QDQ and QOperator formats, as onnxruntime writes them).

``QuantizeLinear(x, scale, zp)`` computes ``saturate(round(x / scale) + zp)`` into the integer
type of ``zp`` (uint8 by default); ``DequantizeLinear(q, scale, zp)`` reads integers. As with
QONNX, the accumulator sees the raw integers: the integer type's range, whatever ``zp`` is.
"""

from __future__ import annotations

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.graph import Graph, attr
from fhe_lint.io.onnx_proto import NodeProto, TensorProto
from fhe_lint.ops import TYPE_KEEPING_OPS
from fhe_lint.quantizers import IntRange, Quantizer

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
            zp = node.input[2] if len(node.input) > 2 else ""
            return graph.const_proto(zp).data_type if zp and graph.is_const(zp) else TensorProto.UINT8
        if op == "DynamicQuantizeLinear":
            return TensorProto.UINT8
        if op in _OUTPUT_ZERO_POINT:
            i = _OUTPUT_ZERO_POINT[op]
            zp = node.input[i] if len(node.input) > i else ""
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


def _const_input(graph: Graph, node: NodeProto, i: int, what: str) -> np.ndarray | None:
    name = node.input[i] if len(node.input) > i else ""
    if not name:
        return None
    if not graph.is_const(name):
        raise UnsupportedModelError(f"{graph.name(node)}: {what} is not a constant")
    value = graph.const(name)
    if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value.astype(np.float64)).all():
        raise UnsupportedModelError(f"{graph.name(node)}: {what} has NaN, Inf or non-numeric values")
    return value.astype(np.float64)


def weight_quantizer(graph: Graph, node: NodeProto, ndim: int, integer_source: bool) -> Quantizer:
    """The quantizer of a weight behind a QuantizeLinear (float source) or DequantizeLinear (int)."""
    name = graph.name(node)
    scale = _const_input(graph, node, 1, "scale")
    if scale is None or (scale <= 0).any():
        raise UnsupportedModelError(f"{name}: scale must be positive")
    zp = _const_input(graph, node, 2, "zero-point")
    zp = np.zeros(()) if zp is None else zp
    grid, bits = int_range(graph, node.output[0] if node.op_type == "QuantizeLinear" else node.input[0], name)
    return Quantizer(name, bits, grid, _per_axis(graph, node, scale, ndim), _per_axis(graph, node, zp, ndim),
                     "ROUND", integer_source=integer_source)


def integer_weight(graph: Graph, layer: NodeProto, tensor: str, zp_input: str, ndim: int) -> Quantizer:
    """A QOperator weight: the integer initializer itself, minus its zero-point input."""
    name = graph.name(layer)
    grid, bits = int_range(graph, tensor, name)
    zp = graph.const(zp_input).astype(np.float64) if zp_input and graph.is_const(zp_input) else np.zeros(())
    if zp.ndim == 1 and zp.size > 1 and ndim > 0:  # per output channel: axis 0 (conv) or last (matmul)
        axis = 0 if layer.op_type in ("QLinearConv", "ConvInteger") else ndim - 1
        shape = [1] * ndim
        shape[axis] = zp.size
        zp = zp.reshape(shape)
    return Quantizer(name, bits, grid, np.ones(()), zp, "ROUND", integer_source=True)
