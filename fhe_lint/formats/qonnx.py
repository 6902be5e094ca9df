"""The QONNX format (Brevitas, FINN): ``Quant`` and ``BipolarQuant`` nodes.

``Quant(x, scale, zero_point, bitwidth; signed, narrow, rounding_mode)`` computes
``q = clip(round(x / scale + zero_point), qmin, qmax)`` and outputs ``(q - zero_point) * scale``;
``BipolarQuant(x, scale)`` outputs ``sign(x) * scale`` with ``sign(0) = +1``.
"""

from __future__ import annotations

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.formats.graph import Graph, attr
from fhe_lint.formats.ops import QONNX_DOMAINS
from fhe_lint.formats.quantizer import (MAX_BITS, ROUNDING, InputRange, IntRange, Quantizer, const_param,
                                        integer_range, scalar_params)
from fhe_lint.io.onnx_proto import NodeProto


def is_qonnx_quant(node: NodeProto) -> bool:
    return node.domain in QONNX_DOMAINS and node.op_type in ("Quant", "BipolarQuant")


def _scalar_int(graph: Graph, node: NodeProto, index: int, what: str) -> int:
    where = f"{graph.name(node)}"
    if len(node.input) <= index or not graph.is_const(node.input[index]):
        raise UnsupportedModelError(f"{where}: {what} is not a constant")
    value = graph.const(node.input[index])
    if (value.size != 1 or not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all()
            or float(value.flat[0]) != int(value.flat[0])):
        raise UnsupportedModelError(f"{where}: {what} must be one integer, got {value.ravel()[:4].tolist()}")
    return int(value.flat[0])


def _param(graph: Graph, node: NodeProto, index: int, what: str, need_const: bool) -> np.ndarray | None:
    """A scale or zero-point; only a weight quantizer needs its value (activations need bits only)."""
    value = const_param(graph, node, index, what, required=need_const)
    if value is None and need_const:
        raise UnsupportedModelError(f"{graph.name(node)}: {what} is not a constant")
    return value


def parse_quant(graph: Graph, node: NodeProto, need_params: bool) -> Quantizer:
    """Read a QONNX quantizer, validating every attribute that changes its integer grid."""
    name = graph.name(node)
    scale = _param(graph, node, 1, "scale", need_params)
    if scale is not None and (scale <= 0).any():
        raise UnsupportedModelError(f"{name}: scale must be positive")
    scale = np.ones(()) if scale is None else scale
    if node.op_type == "BipolarQuant":
        return Quantizer(name, 1, IntRange(-1, 1), scale, np.zeros(()), "BIPOLAR")
    zero_point = _param(graph, node, 2, "zero-point", need_params)
    zero_point = np.zeros(()) if zero_point is None else zero_point
    if (zero_point != np.round(zero_point)).any():
        raise UnsupportedModelError(f"{name}: zero-point must be integer-valued")
    bits = _scalar_int(graph, node, 3, "bit-width")
    if not 1 <= bits <= MAX_BITS:
        raise UnsupportedModelError(f"{name}: bit-width {bits} is outside 1..{MAX_BITS}")
    signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
    rounding = str(attr(node, "rounding_mode", "ROUND"))
    if rounding.upper() not in ROUNDING:
        raise UnsupportedModelError(f"{name}: unsupported rounding_mode {rounding!r}")
    grid = integer_range(bits, signed, narrow)
    if grid.lo > grid.hi:
        raise UnsupportedModelError(f"{name}: a {bits}-bit narrow quantizer has no values")
    return Quantizer(name, bits, grid, scale, zero_point, rounding.upper())


def output_range(graph: Graph, node: NodeProto) -> InputRange | None:
    """The integers a QONNX quantizer emits (None: the node is no QONNX quantizer)."""
    if not is_qonnx_quant(node):
        return None
    q = parse_quant(graph, node, need_params=False)
    return InputRange(q.range, q.bits, (q.node,), scalar_params(graph, node) if node.op_type == "Quant" else None)
