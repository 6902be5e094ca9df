"""Find the linear layers of a model and express each as integer weights plus an input range.

One table (``SPECS``) says which operand of which op is a weight; the format adapters say what
quantizes it (``qonnx``: a ``Quant``; ``qdq``: a ``QuantizeLinear``/``DequantizeLinear`` pair;
``qoperator``: an integer initializer with a zero-point input; ``float_model``: the assumed
bit-width of a float model); ``weights`` lays it out per neuron and ``walk`` finds the input's
range. Whatever cannot be resolved soundly is recorded with the reason, for FHE005.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.formats import float_model, qdq, qonnx, qoperator
from fhe_lint.formats.channels_last import channels_at_end
from fhe_lint.formats.graph import Graph, attr, optional_input
from fhe_lint.formats.ops import CHANNELS_LAST_DOMAIN, QONNX_DOMAINS
from fhe_lint.formats.quantizer import InputRange, IntRange, Quantizer
from fhe_lint.formats.walk import input_range
from fhe_lint.formats.weights import WeightTensor, weight_chain, weight_tensor
from fhe_lint.io.onnx_proto import NodeProto
from fhe_lint.settings import Settings


@dataclass(frozen=True)
class LayerSpec:
    """Where an op keeps its operands. ``zero_points`` marks a QOperator op (integer operands)."""

    family: str  # gemm | matmul | conv | convtranspose
    weight_operands: tuple[int, ...]  # candidates, preferred first; the other is the data
    data_of: dict[int, int]
    zero_points: dict[int, int] = field(default_factory=dict)
    bias: int | None = None
    scales: bool = False  # each zero-point input follows its operand's scale input (QLinear ops)


SPECS: dict[tuple[str, str], LayerSpec] = {
    ("", "Gemm"): LayerSpec("gemm", (1, 0), {1: 0, 0: 1}, bias=2),
    ("", "MatMul"): LayerSpec("matmul", (1, 0), {1: 0, 0: 1}),
    ("", "Conv"): LayerSpec("conv", (1,), {1: 0}, bias=2),
    ("", "ConvTranspose"): LayerSpec("convtranspose", (1,), {1: 0}, bias=2),
    (CHANNELS_LAST_DOMAIN, "Conv"): LayerSpec("conv", (1,), {1: 0}, bias=2),  # NHWC data, OIHW weights
    ("", "QLinearConv"): LayerSpec("conv", (3,), {3: 0}, {0: 2, 3: 5}, bias=8, scales=True),
    ("", "QLinearMatMul"): LayerSpec("matmul", (3, 0), {3: 0, 0: 3}, {0: 2, 3: 5}, scales=True),
    ("com.microsoft", "QGemm"): LayerSpec("gemm", (3, 0), {3: 0, 0: 3}, {0: 2, 3: 5}, bias=6, scales=True),
    ("", "MatMulInteger"): LayerSpec("matmul", (1, 0), {1: 0, 0: 1}, {0: 2, 1: 3}),
    ("", "ConvInteger"): LayerSpec("conv", (1,), {1: 0}, {0: 2, 1: 3}),
}


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


def _weight_quantizer(graph: Graph, spec: LayerSpec, layer: NodeProto, operand: int, source: str,
                      qnode: NodeProto | None, settings: Settings) -> Quantizer | None:
    """The weight's quantizer, read by the adapter of the format that quantizes it."""
    w = graph.const(source)
    if spec.zero_points:
        at = spec.zero_points[operand]
        zp = optional_input(layer, at)
        scale = layer.input[at - 1] if spec.scales else None  # QLinear ops: the scale before the zero-point
        return qoperator.integer_weight(graph, layer, source, zp, w.ndim, scale)
    if qnode is None:
        if settings.weight_bits is None:
            return None
        return float_model.symmetric(settings.weight_bits, w, f"{graph.name(layer)} (assumed {settings.weight_bits}-bit)")
    if qonnx.is_qonnx_quant(qnode):
        return qonnx.parse_quant(graph, qnode, need_params=True)
    return qdq.weight_quantizer(graph, qnode, w.ndim, integer_source=qnode.op_type == "DequantizeLinear")


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
    if spec.zero_points:
        return qoperator.input_range(graph, layer, layer.input[operand]), None
    return _walked_or_assumed(graph, layer.input[operand], settings)


def _walked_or_assumed(graph: Graph, tensor: str, settings: Settings) -> tuple[InputRange | None, str | None]:
    """The quantizer's range; failing that, a float model's assumed unsigned ``--input-bits``."""
    found, why = input_range(graph, tensor)
    if found is None and settings.input_bits is not None:
        return float_model.assumed_input(settings.input_bits), None
    return found, why


def _runtime(graph: Graph, spec: LayerSpec, layer: NodeProto, data: int) -> tuple[int, np.ndarray | None] | None:
    """QOperator/QDQ layers run ``sum (x - zp_x)(w - zp_w) + bias_int32``: its zero-point and bias."""
    if spec.zero_points:
        return qoperator.runtime(graph, optional_input(layer, spec.zero_points[data]), optional_input(layer, spec.bias))
    return qdq.runtime(graph, layer.input[data], optional_input(layer, spec.bias))


def spec_key(node: NodeProto) -> tuple[str, str]:
    return node.domain if node.domain != "ai.onnx" else "", node.op_type


def _layer(graph: Graph, node: NodeProto, settings: Settings) -> LinearLayer | None:
    spec = SPECS[spec_key(node)]
    name, op = graph.name(node), node.op_type
    chains = {i: weight_chain(graph, node.input[i]) for i in spec.weight_operands if len(node.input) > i}
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
        known, _ = _data_range(graph, spec, node, spec.data_of[operand], settings)
        flags = "--weight-bits" if known is not None else "--weight-bits and --input-bits"
        return LinearLayer(node, name, op, None, known, "its weight is a float constant with no quantizer "
                           f"(give {flags} to check it as Concrete ML's post-training quantization would)")
    weight = weight_tensor(graph, spec.family, node, operand, source, q, path)
    data = spec.data_of[operand]
    rng, why = _data_range(graph, spec, node, data, settings)
    return LinearLayer(node, name, op, weight, rng, why, _is_zero_padded(node), _phases(spec, node, weight),
                       runtime=_runtime(graph, spec, node, data))


def find_linear_layers(graph: Graph, settings: Settings) -> list[LinearLayer]:
    """Every linear layer that computes on run-time data, in graph order."""
    layers = []
    for node in graph.topological():
        key = spec_key(node)
        if key in SPECS:
            layer = _layer(graph, node, settings)
        elif key in SUM_OPS:
            layer = _sum_layer(graph, node, settings)
        elif _looks_linear(graph, node):
            op = f"{node.domain}.{node.op_type}" if key[0] else node.op_type
            layer = LinearLayer(node, graph.name(node), node.op_type, None, None,
                                f"{op} looks like a linear layer, but fhe-lint does not know how it computes")
        else:
            continue
        if layer is not None:
            layers.append(layer)
    if not layers:
        raise UnsupportedModelError("no linear layer (Gemm, MatMul, Conv, ...) on run-time data: nothing to check")
    return layers


_LINEAR_NAMES = ("conv", "matmul", "gemm", "dense", "linear", "fullyconnected", "einsum", "attention",
                 "matrixvector", "vectorvector")


def _looks_linear(graph: Graph, node: NodeProto) -> bool:
    """An op fhe-lint cannot read that may hide an accumulator: named like a linear layer (in any
    domain), or a custom op multiplying run-time data by a constant of two or more dimensions.
    Naming it (FHE005) keeps "nothing to check" from ever meaning "nothing was read"."""
    name = node.op_type.lower()
    if name.endswith("quantizelinear"):  # (De)QuantizeLinear: a quantizer, whatever its name says
        return False
    if any(word in name for word in _LINEAR_NAMES):
        return True
    if spec_key(node)[0] in ("", "com.microsoft") or node.domain in QONNX_DOMAINS:
        return False
    tainted = graph.encrypted_tensors()
    return any(i in tainted for i in node.input) and any(
        graph.is_const(i) and len(graph.const_proto(i).dims) >= 2 for i in node.input if i)


# --- weightless sums: pools add their window's inputs; an encrypted MatMul adds products ---


def _encrypted_product(graph: Graph, spec: LayerSpec, node: NodeProto, settings: Settings) -> LinearLayer:
    """x @ y with both operands encrypted (attention-like): K products, each within the corners
    of the two ranges. Reported, never fixed: there is no weight to prune."""
    name, op = graph.name(node), node.op_type
    tainted = graph.encrypted_tensors()
    operands = [i for i in spec.weight_operands if len(node.input) > i]
    if not all(node.input[i] in tainted for i in operands):
        return LinearLayer(node, name, op, None, None,
                           "its weight is computed by ops from constants, which fhe-lint does not evaluate")
    if spec.family != "matmul":
        return LinearLayer(node, name, op, None, None, "both operands are computed at run time")
    a, why_a = _data_range(graph, spec, node, operands[-1], settings)
    b, why_b = _data_range(graph, spec, node, operands[0], settings)
    taps, why_k = _extent(graph.shape(node.input[0]), [-1], "its operands")
    if a is None or b is None or taps is None:
        return LinearLayer(node, name, op, None, None, why_a or why_b or why_k)
    corners = [x * y for x in (a.range.lo, a.range.hi) for y in (b.range.lo, b.range.hi)]
    product = InputRange(IntRange(min(corners), max(corners)), max(a.bits, b.bits), a.quantizers + b.quantizers)
    return LinearLayer(node, name, op, None, product, taps=taps)


# Weightless sums: (domain, op) -> how its taps are counted. QOperator's pools (com.microsoft)
# read integers directly, and may keep channels last.
SUM_OPS: dict[tuple[str, str], str] = {
    ("", "AveragePool"): "kernel", ("", "GlobalAveragePool"): "global", ("", "ReduceSum"): "reduce",
    ("com.microsoft", "QLinearAveragePool"): "kernel", ("com.microsoft", "QLinearGlobalAveragePool"): "global",
}


def _sum_layer(graph: Graph, node: NodeProto, settings: Settings) -> LinearLayer | None:
    name, op = graph.name(node), node.op_type
    if graph.is_const(node.input[0]):
        return None
    how = SUM_OPS[(node.domain, op)]
    if how == "kernel":
        taps: int | None = int(np.prod(attr(node, "kernel_shape", [1])))
    else:
        shape = graph.shape(node.input[0])
        if how == "global":
            spatial = None if shape is None else (list(range(1, len(shape) - 1)) if channels_at_end(node)
                                                  else list(range(2, len(shape))))
            taps, why = _extent(shape, spatial, "its input")
        else:
            axes = [int(a) for a in graph.const(node.input[1]).ravel()] if len(node.input) > 1 and node.input[1] \
                else (attr(node, "axes") or [])
            if not axes and attr(node, "noop_with_empty_axes", 0):
                return None
            taps, why = _extent(shape, axes or None, "its input")
        if taps is None:
            return LinearLayer(node, name, op, None, None, why)
    if node.domain == "com.microsoft":
        return LinearLayer(node, name, op, None, qoperator.input_range(graph, node, node.input[0]), taps=taps)
    rng, why = _walked_or_assumed(graph, node.input[0], settings)
    return LinearLayer(node, name, op, None, rng, why, taps=taps)


def _extent(shape: list[int | None] | None, axes: list[int] | None, what: str) -> tuple[int | None, str | None]:
    """How many elements ``axes`` of ``shape`` hold (all axes when None), or why that is unknown."""
    if shape is None:
        return None, f"the shape of {what} is unknown (not declared, and shape inference cannot tell)"
    dims = [shape[a] for a in (axes if axes is not None else range(len(shape)))]
    if any(d is None for d in dims):
        return None, f"the shape of {what} is {['?' if d is None else d for d in shape]}: a summed dimension is symbolic"
    return int(np.prod(dims)), None
