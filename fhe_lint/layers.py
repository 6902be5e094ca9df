"""Find the linear layers of a model and express each as integer weights plus an input range.

This is the QONNX adapter: a layer's weight is a float constant behind a ``Quant`` (possibly
followed by layout ops such as a Transpose), its input is the integer output of the quantizer
found by walking back through ops that only move or copy values. Whatever cannot be resolved
soundly is recorded with the reason, for FHE005, never skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.graph import Graph, attr
from fhe_lint.quantizers import IntRange, Quantizer, is_qonnx_quant, parse_quant

LINEAR_OPS = frozenset({"Gemm", "MatMul", "Conv"})


@dataclass(frozen=True)
class WeightTensor:
    """A layer's weights as ``(neurons, fan_in)`` arrays, each tap traceable to its float source.

    ``d`` is ``q_w - zp_w`` in the narrowest integer type; ``layout`` maps any array shaped like
    the ``source`` initializer to the same ``(neurons, fan_in)`` arrangement, so that what only
    a fix needs (magnitudes, positions) is computed only when fixing.
    """

    d: np.ndarray
    source: str
    float_weights: np.ndarray
    quantizer: Quantizer
    path: tuple[onnx.NodeProto, ...]
    layout: Callable[[np.ndarray], np.ndarray]

    @property
    def bits(self) -> int:
        return self.quantizer.bits

    def magnitude(self) -> np.ndarray:
        """|w| of the float weights: the L1 pruning order."""
        return self.layout(np.abs(self.float_weights))

    def source_index(self) -> np.ndarray:
        """Each tap's flat position in the ``source`` initializer."""
        return self.layout(np.arange(self.float_weights.size).reshape(self.float_weights.shape))


@dataclass(frozen=True)
class InputRange:
    range: IntRange
    bits: int
    quantizers: tuple[str, ...]


@dataclass(frozen=True)
class LinearLayer:
    node: onnx.NodeProto
    name: str
    op: str
    weight: WeightTensor | None
    input: InputRange | None
    unknown: str | None = None  # why weight or input range could not be resolved
    zero_padded: bool = False

    @property
    def neurons(self) -> int:
        return self.weight.d.shape[0] if self.weight is not None else 0

    @property
    def fan_in(self) -> int:
        return self.weight.d.shape[1] if self.weight is not None else 0


# --- layout ops: applied to weights in the graph's order, walked through backwards for inputs ---


def _axes(graph: Graph, node: onnx.NodeProto) -> list[int] | None:
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in graph.const(node.input[1]).ravel()]
    axes = attr(node, "axes")
    return list(axes) if axes is not None else None


def _reshape(graph: Graph, node: onnx.NodeProto, a: np.ndarray) -> np.ndarray:
    shape = [int(s) for s in graph.const(node.input[1]).ravel()]
    if not attr(node, "allowzero", 0):
        shape = [a.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return a.reshape(shape)


def _flatten(graph: Graph, node: onnx.NodeProto, a: np.ndarray) -> np.ndarray:
    axis = attr(node, "axis", 1) % max(a.ndim, 1) if a.ndim else 0
    return a.reshape(int(np.prod(a.shape[:axis])), -1)


def _squeeze(graph: Graph, node: onnx.NodeProto, a: np.ndarray) -> np.ndarray:
    axes = _axes(graph, node)
    return np.squeeze(a) if axes is None else np.squeeze(a, axis=tuple(x % a.ndim for x in axes))


def _unsqueeze(graph: Graph, node: onnx.NodeProto, a: np.ndarray) -> np.ndarray:
    axes = _axes(graph, node) or []
    ndim = a.ndim + len(axes)
    return np.expand_dims(a, tuple(x % ndim for x in axes))


LAYOUT_OPS: dict[str, Callable[[Graph, onnx.NodeProto, np.ndarray], np.ndarray]] = {
    "Transpose": lambda g, n, a: np.transpose(a, attr(n, "perm") or None),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Identity": lambda g, n, a: a,
}

# Ops between a quantizer and a layer's input that only move, copy or drop values (or add the
# zero of padding): the integers the layer reads are still the quantizer's.
_VALUE_MOVING_OPS = frozenset(LAYOUT_OPS) | {
    "MaxPool", "DepthToSpace", "SpaceToDepth", "Slice", "Gather", "Split", "Tile", "Expand",
}
_NEAREST_OPS = frozenset({"Resize", "Upsample"})


def _is_zero_pad(graph: Graph, node: onnx.NodeProto) -> bool:
    if (attr(node, "mode", b"constant") or b"constant") not in (b"constant", "constant"):
        return True  # reflect/edge/wrap pads copy existing values
    value = node.input[2] if len(node.input) > 2 else ""
    if value and (not graph.is_const(value) or np.any(graph.const(value) != 0)):
        return False
    return float(attr(node, "value", 0.0)) == 0.0


def input_range(graph: Graph, tensor: str) -> tuple[InputRange | None, str | None]:
    """The integer range a layer input can take, or why it is unknown."""
    padded = False
    while True:
        node = graph.producer.get(tensor)
        if node is None:
            return None, f"its input {tensor!r} is a model input with no quantizer in front"
        op = node.op_type
        if op == "Pad" and not _is_zero_pad(graph, node):
            return None, f"Pad {graph.name(node)!r} pads with a non-zero constant"
        moving = op in _VALUE_MOVING_OPS or op == "Pad" or (
            op in _NEAREST_OPS and attr(node, "mode", b"nearest") in (b"nearest", "nearest")
        )
        if not moving:
            break
        padded |= op == "Pad"
        tensor = node.input[0]
    if is_qonnx_quant(node):
        q = parse_quant(graph, node, need_params=False)
        found = InputRange(q.range, q.bits, (q.node,))
    elif op == "Concat":
        parts = [input_range(graph, t) for t in node.input if t and not graph.is_const(t)]
        unknown = next((why for rng, why in parts if rng is None), None)
        if unknown or not parts:
            return None, unknown or f"its input comes from Concat {graph.name(node)!r} of constants"
        ranges = [rng for rng, _ in parts]
        total = ranges[0].range
        for r in ranges[1:]:
            total = total.union(r.range)
        found = InputRange(total, max(r.bits for r in ranges), sum((r.quantizers for r in ranges), ()))
    else:
        return None, f"its input comes from {op} {graph.name(node)!r} with no quantizer after it"
    if padded:
        found = InputRange(found.range.with_zero(), found.bits, found.quantizers)
    return found, None


# --- weights ---


def _weight_chain(graph: Graph, tensor: str) -> tuple[onnx.NodeProto | None, list[onnx.NodeProto], bool]:
    """Walk from a layer operand back to its quantizer through layout ops.

    Returns ``(quantizer, layout_nodes_in_graph_order, is_constant)``; ``is_constant`` tells a
    raw float weight (no quantizer: unknown range) from a run-time value.
    """
    chain: list[onnx.NodeProto] = []
    while True:
        if graph.is_const(tensor):
            return None, chain[::-1], True
        node = graph.producer.get(tensor)
        if node is None:
            return None, [], False
        if is_qonnx_quant(node):
            if node.input and graph.is_const(node.input[0]):
                return node, chain[::-1], True
            return None, [], False
        if node.op_type not in LAYOUT_OPS:
            return None, [], False
        chain.append(node)
        tensor = node.input[0]


def _to_neuron_major(op: str, node: onnx.NodeProto, operand: int, a: np.ndarray) -> np.ndarray:
    """Lay out a weight as (neurons, fan_in) following the op's definition, never a guess."""
    if op == "Conv":
        return a.reshape(a.shape[0], -1)
    if op == "Gemm":
        trans = attr(node, "transB" if operand == 1 else "transA", 0)
        # A is (M, K): rows are neurons; B is (K, N): columns are neurons.
        rows_are_neurons = (operand == 0) != bool(trans)
        return a if rows_are_neurons else a.T
    # MatMul: B (..., K, N) -> neurons are columns; A (..., M, K) -> neurons are rows.
    if a.ndim == 1:
        return a.reshape(1, -1)
    if operand == 1:
        a = np.swapaxes(a, -1, -2)
    return a.reshape(-1, a.shape[-1])


def _weight_tensor(graph: Graph, layer: onnx.NodeProto, operand: int, quant: onnx.NodeProto,
                   chain: list[onnx.NodeProto]) -> WeightTensor:
    q = parse_quant(graph, quant, need_params=True)
    source = quant.input[0]
    w = graph.const(source)
    if not np.issubdtype(w.dtype, np.number) or not np.isfinite(w).all():
        raise UnsupportedModelError(f"{graph.name(quant)}: weight {source!r} has NaN, Inf or non-numeric values")
    try:
        np.broadcast_to(q.zero_point, w.shape)
        np.broadcast_to(q.scale, w.shape)
    except ValueError as e:
        raise UnsupportedModelError(
            f"{graph.name(quant)}: scale/zero-point shapes {q.scale.shape}/{q.zero_point.shape} "
            f"do not match weight {w.shape}"
        ) from e

    def layout(a: np.ndarray) -> np.ndarray:
        for node in chain:
            a = LAYOUT_OPS[node.op_type](graph, node, a)
        return _to_neuron_major(layer.op_type, layer, operand, a)

    try:
        d = layout(q.levels(w))
    except (ValueError, IndexError) as e:
        raise UnsupportedModelError(f"{graph.name(layer)}: cannot lay out its weight: {e}") from e
    return WeightTensor(d, source, w, q, (quant, *chain), layout)


def _is_zero_padded(node: onnx.NodeProto) -> bool:
    if node.op_type != "Conv":
        return False
    auto_pad = attr(node, "auto_pad", b"NOTSET")
    return any(attr(node, "pads", []) or []) or auto_pad not in (b"NOTSET", "NOTSET", b"VALID", "VALID")


def _layer(graph: Graph, node: onnx.NodeProto) -> LinearLayer | None:
    name, op = graph.name(node), node.op_type
    operands = [0, 1] if op != "Conv" else [1]
    chains = {i: _weight_chain(graph, node.input[i]) for i in operands if len(node.input) > i}
    weight_side = next((i for i in (1, 0) if i in chains and chains[i][0] is not None), None)
    if weight_side is None:
        raw = [i for i, c in chains.items() if c[2]]
        if op != "Conv" and len(raw) == 2:
            return None  # constant folding, not on the encrypted path
        why = "its weight is a float constant with no quantizer" if raw else "both operands are computed at run time"
        return LinearLayer(node, name, op, None, None, why)
    quant, chain, _ = chains[weight_side]
    weight = _weight_tensor(graph, node, weight_side, quant, chain)
    data = node.input[1 - weight_side] if op != "Conv" else node.input[0]
    rng, why = input_range(graph, data)
    return LinearLayer(node, name, op, weight, rng, why, _is_zero_padded(node))


def find_linear_layers(graph: Graph) -> list[LinearLayer]:
    """Every Gemm / MatMul / Conv that computes on run-time data, in graph order."""
    layers = []
    for node in graph.topological():
        if node.op_type in LINEAR_OPS and node.domain in ("", "ai.onnx"):
            layer = _layer(graph, node)
            if layer is not None:
                layers.append(layer)
    if not layers:
        raise UnsupportedModelError("no linear layer (Gemm, MatMul, Conv) on run-time data: nothing to check")
    return layers
