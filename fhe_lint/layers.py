"""Find the linear layers of a model and express each as integer weights plus an input range.

Format adapters live here as tables: which operand of which op is a weight, what quantizes it
(a QONNX ``Quant``, a QDQ ``QuantizeLinear``/``DequantizeLinear`` pair, a QOperator integer
initializer, or the assumed bit-width of a float model), and how its axes map onto neurons.
An input's range is found by walking back through ops that only move or copy values to the
quantizer. Whatever cannot be resolved soundly is recorded with the reason, for FHE005.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fhe_lint.bounds import int_bits
from fhe_lint.errors import UnsupportedModelError
from fhe_lint.graph import Graph, attr
from fhe_lint.io.onnx_proto import NodeProto
from fhe_lint.onnx_quant import int_range, integer_weight, weight_quantizer
from fhe_lint.ops import LAYOUT_OPS, VALUE_MOVING_OPS
from fhe_lint.quantizers import IntRange, Quantizer, is_qonnx_quant, parse_quant, symmetric
from fhe_lint.settings import Settings


@dataclass(frozen=True)
class LayerSpec:
    """Where an op keeps its operands. ``zero_points`` marks a QOperator op (integer operands)."""

    family: str  # gemm | matmul | conv | convtranspose
    weight_operands: tuple[int, ...]  # candidates, preferred first; the other is the data
    data_of: dict[int, int]
    zero_points: dict[int, int] = field(default_factory=dict)
    bias: int | None = None


SPECS: dict[tuple[str, str], LayerSpec] = {
    ("", "Gemm"): LayerSpec("gemm", (1, 0), {1: 0, 0: 1}, bias=2),
    ("", "MatMul"): LayerSpec("matmul", (1, 0), {1: 0, 0: 1}),
    ("", "Conv"): LayerSpec("conv", (1,), {1: 0}, bias=2),
    ("", "ConvTranspose"): LayerSpec("convtranspose", (1,), {1: 0}, bias=2),
    ("", "QLinearConv"): LayerSpec("conv", (3,), {3: 0}, {0: 2, 3: 5}, bias=8),
    ("", "QLinearMatMul"): LayerSpec("matmul", (3, 0), {3: 0, 0: 3}, {0: 2, 3: 5}),
    ("com.microsoft", "QGemm"): LayerSpec("gemm", (3, 0), {3: 0, 0: 3}, {0: 2, 3: 5}, bias=6),
    ("", "MatMulInteger"): LayerSpec("matmul", (1, 0), {1: 0, 0: 1}, {0: 2, 1: 3}),
    ("", "ConvInteger"): LayerSpec("conv", (1,), {1: 0}, {0: 2, 1: 3}),
}


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


@dataclass(frozen=True)
class InputRange:
    range: IntRange
    bits: int
    quantizers: tuple[str, ...]
    scale_zero_point: tuple[float, float] | None = None  # per-tensor: float value -> its integer


def _scalar_params(graph: Graph, node: NodeProto) -> tuple[float, float] | None:
    names = [node.input[i] if len(node.input) > i else "" for i in (1, 2)]
    values = [graph.const(n) if n and graph.is_const(n) else (None if n else np.zeros(())) for n in names]
    if any(v is None or v.size != 1 for v in values):
        return None
    return float(values[0].ravel()[0]), float(values[1].ravel()[0])


class LayerKind(enum.Enum):
    WEIGHTED = "weighted"  # integer weights times a quantized input: prunable
    SUM = "sum"  # ``taps`` inputs (or products of two encrypted inputs) added, e.g. a pool
    UNKNOWN = "unknown"  # the weight or the input range could not be resolved (FHE005)


@dataclass(frozen=True)
class LinearLayer:
    """A weighted layer (``weight`` set) or a weightless sum (``taps`` inputs added, e.g. a pool);
    :attr:`kind` says which, or that its ranges are unknown."""

    node: NodeProto
    name: str
    op: str
    weight: WeightTensor | None
    input: InputRange | None
    unknown: str | None = None  # why weight or input range could not be resolved
    zero_padded: bool = False
    phases: np.ndarray | None = None  # ConvTranspose with stride: which output phase each tap feeds
    taps: int = 0  # weightless sums only
    runtime: tuple[int, np.ndarray | None] | None = None  # (input zero-point, int32 bias) of QDQ/QOperator

    @property
    def kind(self) -> LayerKind:
        if self.input is None or (self.weight is None and not self.taps):
            return LayerKind.UNKNOWN
        return LayerKind.WEIGHTED if self.weight is not None else LayerKind.SUM

    @property
    def neurons(self) -> int:
        return self.weight.d.shape[0] if self.weight is not None else (1 if self.taps else 0)

    @property
    def fan_in(self) -> int:
        return self.weight.d.shape[1] if self.weight is not None else self.taps


# --- layout ops: applied to weights in the graph's order, walked through backwards for inputs ---


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

_NEAREST_OPS = frozenset({"Resize", "Upsample"})


def _is_zero_pad(graph: Graph, node: NodeProto) -> bool:
    if (attr(node, "mode", "constant") or "constant") != "constant":
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
        moving = op in VALUE_MOVING_OPS or op == "Pad" or (
            op in _NEAREST_OPS and attr(node, "mode", "nearest") == "nearest"
        )
        if not moving:
            break
        padded |= op == "Pad"
        tensor = node.input[0]
    if is_qonnx_quant(node):
        q = parse_quant(graph, node, need_params=False)
        found = InputRange(q.range, q.bits, (q.node,), _scalar_params(graph, node) if node.op_type == "Quant" else None)
    elif op == "DequantizeLinear":
        grid, bits = int_range(graph, node.input[0], graph.name(node))
        found = InputRange(grid, bits, (graph.name(node),), _scalar_params(graph, node))
    elif op in ("Concat", "Add"):
        parts = [input_range(graph, t) for t in node.input if t and not graph.is_const(t)]
        unknown = next((why for rng, why in parts if rng is None), None)
        if unknown or not parts or (op == "Add" and len(parts) != 2):
            return None, unknown or f"its input comes from {op} {graph.name(node)!r} of constants"
        ranges = [rng for rng, _ in parts]
        found = _concat(ranges) if op == "Concat" else _residual_sum(*ranges)
        if found is None:
            return None, f"its input comes from Add {graph.name(node)!r} of branches with different scales"
    else:
        return None, f"its input comes from {op} {graph.name(node)!r} with no quantizer after it"
    if padded:
        found = InputRange(found.range.with_zero(), found.bits, found.quantizers, found.scale_zero_point)
    return found, None



def _concat(ranges: list[InputRange]) -> InputRange:
    total = ranges[0].range
    for r in ranges[1:]:
        total = total.union(r.range)
    return InputRange(total, max(r.bits for r in ranges), sum((r.quantizers for r in ranges), ()))


def _residual_sum(a: InputRange, b: InputRange) -> InputRange | None:
    """A residual Add of two encrypted branches: with one scale and zero-point 0 on both sides
    the integers simply add; otherwise the sum has no integer grid fhe-lint can name."""
    if a.scale_zero_point is None or a.scale_zero_point != b.scale_zero_point or a.scale_zero_point[1] != 0:
        return None
    total = IntRange(a.range.lo + b.range.lo, a.range.hi + b.range.hi)
    return InputRange(total, int_bits(total.lo, total.hi), a.quantizers + b.quantizers, a.scale_zero_point)


# --- weights ---


def _weight_chain(graph: Graph, tensor: str) -> tuple[str | None, NodeProto | None, list[NodeProto]]:
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


def _to_neuron_major(spec: LayerSpec, node: NodeProto, is_a: bool, a: np.ndarray) -> np.ndarray:
    """Lay out a weight as (neurons, fan_in) following the op's definition, never a guess."""
    if spec.family == "conv":
        return a.reshape(a.shape[0], -1)
    if spec.family == "convtranspose":  # (C_in, C_out/g, *k): neuron = output channel
        g = attr(node, "group", 1)
        a = a.reshape(g, a.shape[0] // g, a.shape[1], -1)
        return a.transpose(0, 2, 1, 3).reshape(g * a.shape[2], -1)
    if spec.family == "gemm":
        trans = attr(node, "transA" if is_a else "transB", 0)
        # A is (M, K): rows are neurons; B is (K, N): columns are neurons.
        return a if is_a != bool(trans) else a.T
    # MatMul: B (..., K, N) -> neurons are columns; A (..., M, K) -> neurons are rows.
    if a.ndim == 1:
        return a.reshape(1, -1)
    if not is_a:
        a = np.swapaxes(a, -1, -2)
    return a.reshape(-1, a.shape[-1])


def _weight_quantizer(graph: Graph, spec: LayerSpec, layer: NodeProto, operand: int, source: str,
                      qnode: NodeProto | None, settings: Settings) -> Quantizer | None:
    w = graph.const(source)
    if spec.zero_points:
        zp = layer.input[spec.zero_points[operand]] if len(layer.input) > spec.zero_points[operand] else ""
        return integer_weight(graph, layer, source, zp, w.ndim)
    if qnode is None:
        if settings.weight_bits is None:
            return None
        return symmetric(settings.weight_bits, w, f"{graph.name(layer)} (assumed {settings.weight_bits}-bit)")
    if is_qonnx_quant(qnode):
        return parse_quant(graph, qnode, need_params=True)
    return weight_quantizer(graph, qnode, w.ndim, integer_source=qnode.op_type == "DequantizeLinear")


def _weight_tensor(graph: Graph, spec: LayerSpec, layer: NodeProto, operand: int, source: str,
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
        return _to_neuron_major(spec, layer, operand == 0, a)

    try:
        d = neuron_major(as_operand(q.levels(w, done=graph.data.release if graph.data else None)))
    except (ValueError, IndexError) as e:
        raise UnsupportedModelError(f"{graph.name(layer)}: cannot lay out its weight: {e}") from e
    return WeightTensor(d, source, w, q, tuple(path), as_operand, neuron_major, operand)


def _is_zero_padded(node: NodeProto) -> bool:
    if "Conv" not in node.op_type:
        return False
    return any(attr(node, "pads", []) or []) or attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID")


def _phases(spec: LayerSpec, node: NodeProto, weight: WeightTensor) -> np.ndarray | None:
    """ConvTranspose: tap ``k`` of a dimension feeds output positions ``o`` with
    ``(o + pad - k * dilation) % stride == 0``, so taps split into stride-many phases and an
    output sums one phase's taps only."""
    if spec.family != "convtranspose":
        return None
    kernel = weight.source_values.shape[2:]
    strides = attr(node, "strides", None) or [1] * len(kernel)
    if all(s == 1 for s in strides):
        return None
    dilations = attr(node, "dilations", None) or [1] * len(kernel)
    grids = np.meshgrid(*[(np.arange(k) * dl) % st for k, dl, st in zip(kernel, dilations, strides)], indexing="ij")
    phase = np.ravel_multi_index([g.ravel() for g in grids], strides)
    return np.tile(phase, weight.d.shape[1] // phase.size)


def _data_range(graph: Graph, spec: LayerSpec, layer: NodeProto, operand: int,
                settings: Settings) -> tuple[InputRange | None, str | None]:
    tensor = layer.input[operand]
    if spec.zero_points:
        grid, bits = int_range(graph, tensor, graph.name(layer))
        return InputRange(grid, bits, (tensor,)), None
    return _walked_or_assumed(graph, tensor, settings)


def _walked_or_assumed(graph: Graph, tensor: str, settings: Settings) -> tuple[InputRange | None, str | None]:
    """The quantizer's range; failing that, a float model's assumed unsigned ``--input-bits``."""
    found, why = input_range(graph, tensor)
    if found is None and settings.input_bits is not None:
        b = settings.input_bits
        return InputRange(IntRange(0, 2**b - 1), b, (f"assumed {b}-bit",)), None
    return found, why


def _runtime(graph: Graph, spec: LayerSpec, layer: NodeProto, data: int) -> tuple[int, np.ndarray | None] | None:
    """QOperator/QDQ layers run ``sum (x - zp_x)(w - zp_w) + bias_int32``: its zero-point and bias."""
    if spec.zero_points:
        zp_name = layer.input[spec.zero_points[data]] if len(layer.input) > spec.zero_points[data] else ""
        bias_name = layer.input[spec.bias] if spec.bias is not None and len(layer.input) > spec.bias else ""
        bias = graph.const(bias_name).astype(np.int64).ravel() if bias_name and graph.is_const(bias_name) else None
    else:
        dq = graph.producer.get(layer.input[data])
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        zp_name = dq.input[2] if len(dq.input) > 2 else ""
        bias = None
        b = layer.input[spec.bias] if spec.bias is not None and len(layer.input) > spec.bias else ""
        bq = graph.producer.get(b) if b else None
        if bq is not None and bq.op_type == "DequantizeLinear" and graph.is_const(bq.input[0]):
            bias = graph.const(bq.input[0]).astype(np.int64).ravel()
    zp = graph.const(zp_name) if zp_name and graph.is_const(zp_name) else np.zeros(())
    if zp.size != 1:
        return None
    return int(zp.ravel()[0]), bias


def _layer(graph: Graph, node: NodeProto, settings: Settings) -> LinearLayer | None:
    spec = SPECS[(node.domain if node.domain != "ai.onnx" else "", node.op_type)]
    name, op = graph.name(node), node.op_type
    chains = {i: _weight_chain(graph, node.input[i]) for i in spec.weight_operands if len(node.input) > i}
    constant = [i for i, (src, _, _) in chains.items() if src is not None]
    if not constant:
        return _encrypted_product(graph, spec, node, settings)
    operand = constant[0]
    if len(constant) > 1 and chains[constant[0]][1] is None and chains[constant[1]][1] is not None:
        operand = constant[1]  # prefer the quantized constant
    if all(len(node.input) > spec.data_of[i] and graph.is_const(node.input[spec.data_of[i]]) for i in constant):
        return None  # constant folding, not on the encrypted path
    source, qnode, path = chains[operand]
    q = _weight_quantizer(graph, spec, node, operand, source, qnode, settings)
    if q is None:
        return LinearLayer(node, name, op, None, None, "its weight is a float constant with no quantizer "
                           "(give --weight-bits and --input-bits for a float model)")
    weight = _weight_tensor(graph, spec, node, operand, source, q, path)
    data = spec.data_of[operand]
    rng, why = _data_range(graph, spec, node, data, settings)
    return LinearLayer(node, name, op, weight, rng, why, _is_zero_padded(node), _phases(spec, node, weight),
                       runtime=_runtime(graph, spec, node, data))


def find_linear_layers(graph: Graph, settings: Settings) -> list[LinearLayer]:
    """Every linear layer that computes on run-time data, in graph order."""
    layers = []
    for node in graph.topological():
        key = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        if key in SPECS:
            layer = _layer(graph, node, settings)
        elif key[0] == "" and node.op_type in SUM_OPS:
            layer = _sum_layer(graph, node, settings)
        else:
            continue
        if layer is not None:
            layers.append(layer)
    if not layers:
        raise UnsupportedModelError("no linear layer (Gemm, MatMul, Conv, ...) on run-time data: nothing to check")
    return layers


# --- weightless sums: pools add their window's inputs; an encrypted MatMul adds products ---


def _encrypted_product(graph: Graph, spec: LayerSpec, node: NodeProto, settings: Settings) -> LinearLayer:
    """x @ y with both operands encrypted (attention-like): K products, each within the corners
    of the two ranges. Reported, never fixed: there is no weight to prune."""
    name, op = graph.name(node), node.op_type
    tainted = graph.encrypted_tensors()
    if not all(t in tainted for t in node.input[:2]):
        return LinearLayer(node, name, op, None, None,
                           "its weight is computed by ops from constants, which fhe-lint does not evaluate")
    if spec.family != "matmul" or spec.zero_points:
        return LinearLayer(node, name, op, None, None, "both operands are computed at run time")
    a, why_a = _data_range(graph, spec, node, 0, settings)
    b, why_b = _data_range(graph, spec, node, 1, settings)
    shape = graph.shape(node.input[0])
    if a is None or b is None or shape is None:
        return LinearLayer(node, name, op, None, None, why_a or why_b or "the shape of its operands is unknown")
    corners = [x * y for x in (a.range.lo, a.range.hi) for y in (b.range.lo, b.range.hi)]
    product = InputRange(IntRange(min(corners), max(corners)), max(a.bits, b.bits), a.quantizers + b.quantizers)
    return LinearLayer(node, name, op, None, product, taps=int(shape[-1]))

SUM_OPS = frozenset({"AveragePool", "GlobalAveragePool", "ReduceSum"})


def _sum_layer(graph: Graph, node: NodeProto, settings: Settings) -> LinearLayer | None:
    name, op = graph.name(node), node.op_type
    if graph.is_const(node.input[0]):
        return None
    if op == "AveragePool":
        taps = int(np.prod(attr(node, "kernel_shape", [1])))
    else:
        shape = graph.shape(node.input[0])
        if shape is None:
            return LinearLayer(node, name, op, None, None, "the shape of its input is unknown")
        if op == "GlobalAveragePool":
            taps = int(np.prod(shape[2:]))
        else:
            axes = [int(a) for a in graph.const(node.input[1]).ravel()] if len(node.input) > 1 and node.input[1] \
                else (attr(node, "axes") or [])
            if not axes and attr(node, "noop_with_empty_axes", 0):
                return None
            axes = axes or list(range(len(shape)))
            taps = int(np.prod([shape[a] for a in axes]))
    rng, why = _walked_or_assumed(graph, node.input[0], settings)
    return LinearLayer(node, name, op, None, rng, why, taps=taps)
