"""A layer's weight: the constant behind it, its quantizer, and its layout as ``(neurons, fan_in)``.

The neuron axis is found by replaying the layout ops between the constant and the layer (a
Transpose after the weight quantizer is common) and then the layer's own definition, never by
assuming a layout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.formats.channels_last import is_channels_last
from fhe_lint.formats.graph import Graph, attr
from fhe_lint.formats.ops import LAYOUT_OPS
from fhe_lint.formats.qonnx import is_qonnx_quant
from fhe_lint.formats.quantizer import Quantizer
from fhe_lint.io.onnx_proto import NodeProto


@dataclass(frozen=True)
class WeightTensor:
    """A layer's weights as ``(neurons, fan_in)`` arrays, each tap traceable to its source.

    ``d`` is ``q_w - zp_w`` in the narrowest integer type; ``layout`` maps any array shaped like
    the ``source`` constant to the same ``(neurons, fan_in)`` arrangement, so that what only
    a fix needs (magnitudes, positions) is computed only when fixing.
    """

    d: np.ndarray
    source: str
    source_values: np.ndarray
    quantizer: Quantizer
    path: tuple[NodeProto, ...]  # nodes from the source to the layer, in graph order
    as_operand: Callable[[np.ndarray], np.ndarray]  # source-shaped -> as the layer receives it
    neuron_major: Callable[[np.ndarray], np.ndarray]  # layer operand -> (neurons, fan_in)
    operand: int  # which input of the layer node the weight is

    def layout(self, a: np.ndarray) -> np.ndarray:
        return self.neuron_major(self.as_operand(a))

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    def magnitude(self) -> np.ndarray:
        """|w| of the real-valued weights, the L1 pruning order, as float32: non-negative float32s
        order like their bit patterns, so ``.view(np.uint32)`` sorts as integers."""
        q, w = self.quantizer, self.source_values
        real = (w - q.zero_point) * q.scale if q.integer_source else w
        return self.layout(np.abs(real).astype(np.float32, copy=False))

    def source_index(self) -> np.ndarray:
        """Each tap's flat position in the ``source`` constant."""
        size = self.source_values.size
        flat = np.arange(size, dtype=np.int32 if size < 2**31 else np.int64)
        return self.layout(flat.reshape(self.source_values.shape))


def _axes(graph: Graph, node: NodeProto) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in graph.const(node.input[1]).ravel()]
    axes = attr(node, "axes")
    return list(axes) if axes is not None else None


def _reshape(graph: Graph, node: NodeProto, a: np.ndarray) -> np.ndarray:
    shape = [int(s) for s in graph.const(node.input[1]).ravel()]
    if not attr(node, "allowzero", 0):
        shape = [a.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return a.reshape(shape)


def _flatten(graph: Graph, node: NodeProto, a: np.ndarray) -> np.ndarray:
    axis = attr(node, "axis", 1) % max(a.ndim, 1) if a.ndim else 0
    return a.reshape(int(np.prod(a.shape[:axis])), -1)


def _squeeze(graph: Graph, node: NodeProto, a: np.ndarray) -> np.ndarray:
    axes = _axes(graph, node)
    return np.squeeze(a) if axes is None else np.squeeze(a, axis=tuple(x % a.ndim for x in axes))


def _unsqueeze(graph: Graph, node: NodeProto, a: np.ndarray) -> np.ndarray:
    axes = _axes(graph, node) or []
    ndim = a.ndim + len(axes)
    return np.expand_dims(a, tuple(x % ndim for x in axes))


# How each of ops.LAYOUT_OPS rearranges a constant (a weight is laid out by replaying them).
LAYOUT_FUNCTIONS: dict[str, Callable[[Graph, NodeProto, np.ndarray], np.ndarray]] = {
    "Transpose": lambda g, n, a: np.transpose(a, attr(n, "perm") or None),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": lambda g, n, a: a,
}


def weight_chain(graph: Graph, tensor: str) -> tuple[str | None, NodeProto | None, list[NodeProto]]:
    """Walk from a layer operand back through layout ops to a constant.

    Returns ``(source, quantizer_node, nodes_after_source_in_graph_order)``; ``source`` is None
    when the operand is computed at run time. ``quantizer_node`` is a QONNX Quant, a
    QuantizeLinear (float source) or a DequantizeLinear (integer source), or None for a raw
    constant.
    """
    chain: list[NodeProto] = []
    while True:
        if graph.is_const(tensor):
            return tensor, None, chain[::-1]
        node = graph.producer.get(tensor)
        if node is None:
            return None, None, []
        if is_qonnx_quant(node) and node.input and graph.is_const(node.input[0]):
            return node.input[0], node, [node, *chain[::-1]]
        if node.op_type == "DequantizeLinear":
            src = graph.producer.get(node.input[0])
            if graph.is_const(node.input[0]):
                return node.input[0], node, [node, *chain[::-1]]
            if src is not None and src.op_type == "QuantizeLinear" and graph.is_const(src.input[0]):
                return src.input[0], src, [src, node, *chain[::-1]]
            return None, None, []
        if node.op_type not in LAYOUT_OPS:
            return None, None, []
        chain.append(node)
        tensor = node.input[0]


def _to_neuron_major(family: str, node: NodeProto, is_a: bool, a: np.ndarray) -> np.ndarray:
    """Lay out a weight as (neurons, fan_in) following the op's definition, never a guess."""
    if family == "conv":
        if is_channels_last(node):  # O, *kernel, I -> O, I, *kernel: taps in the standard order
            a = np.moveaxis(a, -1, 1)
        return a.reshape(a.shape[0], -1)
    if family == "convtranspose":  # (C_in, C_out/g, *k): neuron = output channel
        g = attr(node, "group", 1)
        a = a.reshape(g, a.shape[0] // g, a.shape[1], -1)
        return a.transpose(0, 2, 1, 3).reshape(g * a.shape[2], -1)
    if family == "gemm":
        trans = attr(node, "transA" if is_a else "transB", 0)
        # A is (M, K): rows are neurons; B is (K, N): columns are neurons.
        return a if is_a != bool(trans) else a.T
    # MatMul: B (..., K, N) -> neurons are columns; A (..., M, K) -> neurons are rows.
    if a.ndim == 1:
        return a.reshape(1, -1)
    if not is_a:
        a = np.swapaxes(a, -1, -2)
    return a.reshape(-1, a.shape[-1])


def weight_tensor(graph: Graph, family: str, layer: NodeProto, operand: int, source: str,
                   q: Quantizer, path: list[NodeProto]) -> WeightTensor:
    w = graph.const(source)
    if not np.issubdtype(w.dtype, np.number):
        raise UnsupportedModelError(f"{q.node}: weight {source!r} is not numeric ({w.dtype})")
    try:
        np.broadcast_to(q.zero_point, w.shape)
        np.broadcast_to(q.scale, w.shape)
    except ValueError as e:
        raise UnsupportedModelError(
            f"{q.node}: scale/zero-point shapes {q.scale.shape}/{q.zero_point.shape} do not match weight {w.shape}"
        ) from e
    chain = [n for n in path if n.op_type in LAYOUT_OPS]

    def as_operand(a: np.ndarray) -> np.ndarray:
        for node in chain:
            a = LAYOUT_FUNCTIONS[node.op_type](graph, node, a)
        return a

    def neuron_major(a: np.ndarray) -> np.ndarray:
        return _to_neuron_major(family, layer, operand == 0, a)

    try:
        d = neuron_major(as_operand(q.levels(w, done=graph.data.release if graph.data else None)))
    except (ValueError, IndexError) as e:
        raise UnsupportedModelError(f"{graph.name(layer)}: cannot lay out its weight: {e}") from e
    return WeightTensor(d, source, w, q, tuple(path), as_operand, neuron_major, operand)
