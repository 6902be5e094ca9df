"""The QOperator format: ``QLinearConv``, ``QLinearMatMul``, ``QGemm`` (com.microsoft),
``MatMulInteger`` and ``ConvInteger``, whose operands are integers and whose zero-points and
int32 bias are inputs of the layer itself."""

from __future__ import annotations

import numpy as np

from fhe_lint.formats.graph import Graph
from fhe_lint.formats.qdq import int_range
from fhe_lint.formats.quantizer import InputRange, Quantizer, scalar_zero_point
from fhe_lint.io.onnx_proto import NodeProto


def integer_weight(graph: Graph, layer: NodeProto, tensor: str, zp_input: str, ndim: int,
                   scale_input: str | None) -> Quantizer:
    """A QOperator weight: the integer initializer itself, minus its zero-point input, at the
    scale input's step (QLinear ops; the integer-only ops have none: 1)."""
    name = graph.name(layer)
    grid, bits = int_range(graph, tensor, name)

    def per_channel(value: np.ndarray) -> np.ndarray:  # per output channel: axis 0 (conv) or last (matmul)
        if value.ndim == 1 and value.size > 1 and ndim > 0:
            shape = [1] * ndim
            shape[0 if layer.op_type in ("QLinearConv", "ConvInteger") else ndim - 1] = value.size
            return value.reshape(shape)
        return value.reshape(()) if value.size == 1 else value

    zp = graph.const(zp_input).astype(np.float64) if zp_input and graph.is_const(zp_input) else np.zeros(())
    scale = graph.const(scale_input).astype(np.float64) if scale_input and graph.is_const(scale_input) else np.ones(())
    return Quantizer(name, bits, grid, per_channel(scale), per_channel(zp), "ROUND", integer_source=True)


def input_range(graph: Graph, layer: NodeProto, tensor: str) -> InputRange:
    """An integer operand's range: its integer type's."""
    grid, bits = int_range(graph, tensor, graph.name(layer))
    return InputRange(grid, bits, (tensor,))


def runtime(graph: Graph, zero_point: str, bias: str) -> tuple[int, np.ndarray | None] | None:
    """The runtime's ``sum (x - zp_x)(w - zp_w) + bias_int32``: the data operand's zero-point and
    the int32 bias, both inputs of the layer."""
    values = graph.const(bias).astype(np.int64).ravel() if bias and graph.is_const(bias) else None
    zp = scalar_zero_point(graph, zero_point)
    return None if zp is None else (zp, values)
