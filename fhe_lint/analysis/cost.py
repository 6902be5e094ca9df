"""What a model will cost in FHE, before any compile: its table lookups (programmable
bootstraps) and their width.

In Concrete ML every encrypted output of a linear layer goes through one table lookup that
holds everything up to the next layer's integers (bias, rescale, activation, the next
quantizer): one lookup per output element, as wide as the accumulator. With Concrete ML's
``rounding_threshold_bits`` r, a b-bit accumulator is first rounded to r bits by an exact
``round_bit_pattern``, which takes b - r more bootstraps per output (Concrete ML 1.9's counts:
mlp_w4a4_deep at r = 6 takes 1,344 = 96 x 5 + 96 x 6 + 48 x 6). The width is the one Concrete
compiles: observed on the calibration data when given, else the exact worst case. The last
layer's outputs are dequantized by the client, in the clear: no lookup (Concrete ML's counts on
the fixtures: cnn_w3a3's 492 = 6 x 8 x 8 + 12 x 3 x 3 outputs of its two convolutions; padding
costs none). Max pools take a lookup per window element of each output. An output whose shape is
unknown leaves the count unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis, ModelAnalysis
from fhe_lint.formats.channels_last import channels_at_end
from fhe_lint.formats.graph import Graph, attr
from fhe_lint.formats.layers import SPECS, spec_key
from fhe_lint.formats.ops import LAYOUT_OPS
from fhe_lint.formats.qonnx import is_qonnx_quant
from fhe_lint.io.onnx_proto import NodeProto


@dataclass(frozen=True)
class LayerCost:
    tlu_count: int | None  # bootstraps per inference, rounding's included (None: not modelled here)
    tlu_bits: int | None  # the lookups' width (None: no lookup, or the accumulator is unknown)
    lookups: int | None = None  # output elements going through a lookup
    bits: int | None = None  # their width before any rounding
    norm2_bits: int = 0  # log2 of the largest squared L2 norm of a neuron's integer weights, here or
    # in the layers this one feeds (their sums carry this layer's lookup noise)
    reads_model_input: bool = False
    next_input_bits: int | None = None  # the widest input quantizer of the layers it feeds
    next_level: float | None = None  # accumulator units per level of that quantizer (scales known)
    pool_lookups: int = 0  # of the max pools between this layer and the next (in tlu_count)


def _per_example(shape: list[int | None] | None) -> int | None:
    """Elements of one example (the leading batch dimension dropped), or None when unknown."""
    if shape is None or any(d is None for d in shape[1:]):
        return None
    return int(np.prod(shape[1:], dtype=np.int64))


def _reaches_output_in_clear(graph: Graph, tensor: str) -> bool:
    """Whether ``tensor`` flows to a model output through layout ops only (dequantized by the client)."""
    outputs = {o.name for o in graph.model.graph.output}
    frontier, seen = [tensor], set()
    while frontier:
        t = frontier.pop()
        if t in outputs:
            return True
        seen.add(t)
        for node in graph.consumers.get(t, []):
            if node.op_type not in LAYOUT_OPS:
                return False
            frontier += [o for o in node.output if o not in seen]
    return False


def _shape(graph: Graph, tensor: str) -> list[int | None] | None:
    """The model's own declaration first: shape inference imports onnx, which a lint avoids."""
    declared = graph.declared_shape(tensor)
    return declared if declared is not None and all(d is not None for d in declared[1:]) else graph.shape(tensor)


def _spatial(node: NodeProto, size: list[int], kernel: list[int], transposed: bool = False) -> list[int] | None:
    """Output sizes of a convolution or pool window sliding over ``size`` (ONNX's arithmetic)."""
    rank = len(size)
    strides = attr(node, "strides", None) or [1] * rank
    dilations = attr(node, "dilations", None) or [1] * rank
    pads = attr(node, "pads", None) or [0] * (2 * rank)
    auto = attr(node, "auto_pad", "NOTSET")
    span = [dl * (k - 1) + 1 for dl, k in zip(dilations, kernel)]
    if transposed:
        extra = attr(node, "output_padding", None) or [0] * rank
        return [(n - 1) * s - pads[i] - pads[i + rank] + w + extra[i]
                for i, (n, s, w) in enumerate(zip(size, strides, span))]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        return [-(-n // s) for n, s in zip(size, strides)]
    if auto == "VALID":
        pads = [0] * (2 * rank)
    return [(n + pads[i] + pads[i + rank] - w) // s + 1 for i, (n, s, w) in enumerate(zip(size, strides, span))]


def _outputs(graph: Graph, la: LayerAnalysis) -> int | None:
    """Elements of one example the layer outputs, by the op's own arithmetic on its input's
    shape (declared, else inferred); None when a dimension is unknown."""
    layer, node = la.layer, la.layer.node
    if layer.op in ("Gemm", "QGemm"):
        return layer.neurons
    data = node.input[0] if layer.weight is None else node.input[SPECS[spec_key(node)].data_of[layer.weight.operand]]
    shape = _shape(graph, data)
    if shape is None or any(d is None for d in shape[1:]):
        return None
    if "MatMul" in layer.op:
        if layer.weight is not None:
            return int(np.prod(shape[1:-1], dtype=np.int64)) * layer.neurons
        other = _shape(graph, node.input[3 if layer.op == "QLinearMatMul" else 1])
        return None if other is None or other[-1] is None else int(np.prod(shape[1:-1], dtype=np.int64)) * other[-1]
    if layer.op == "ReduceSum":
        return None  # its axes decide: left to shape inference
    last = channels_at_end(node)
    channels, size = (shape[-1], shape[1:-1]) if last else (shape[1], shape[2:])
    if layer.op.endswith("GlobalAveragePool"):
        return channels
    if layer.weight is None:  # AveragePool: a window over each channel
        return channels * int(np.prod(_spatial(node, size, attr(node, "kernel_shape", [1]))))
    kernel = list(layer.weight.source_values.shape[1:-1] if last else layer.weight.source_values.shape[2:])
    out = _spatial(node, size, kernel, transposed=layer.op == "ConvTranspose")
    return layer.neurons * int(np.prod(out)) if out is not None else None


def norm2_bits(la: LayerAnalysis) -> int:
    """Bits of the largest squared L2 norm of a neuron's integer weights (a plain sum: its taps)."""
    w = la.layer.weight
    if w is None:
        return (max(1, la.layer.taps) - 1).bit_length()
    # einsum accumulates in int64 without a copy of the weights (a float64 copy took 8x the time)
    largest = int(np.einsum("ij,ij->i", w.d, w.d, dtype=np.int64).max(initial=1))
    return (max(1, largest) - 1).bit_length()  # ceil(log2)


def _reads_model_input(graph: Graph, node: NodeProto, layer_outputs: frozenset[str]) -> bool:
    """Whether a path from a model input reaches the layer without crossing another layer."""
    frontier, seen = [t for t in node.input if t], set()
    while frontier:
        t = frontier.pop()
        if t in seen or t in layer_outputs:
            continue
        seen.add(t)
        if t in graph.inputs:
            return True
        producer = graph.producer.get(t)
        if producer is not None:
            frontier += [i for i in producer.input if i]
    return False


def _layer_cost(graph: Graph, la: LayerAnalysis, rounding_bits: int | None, width: int | None,
                layer_outputs: frozenset[str]) -> LayerCost:
    """``width``: the accumulator's bits as Concrete will compile them (observed on calibration
    data), else the exact worst case. The norms are model_cost's: they need the next layers."""
    bits = width if width is not None else int(la.bounds.bits.max(initial=1)) if la.bounds is not None else None
    out = la.layer.node.output[0]
    count = 0 if _reaches_output_in_clear(graph, out) else _outputs(graph, la)
    if count is None:
        count = _per_example(graph.shape(out))  # an op the arithmetic above does not cover
    if not count or bits is None:
        return LayerCost(count, None, count, None)
    dropped = max(0, bits - rounding_bits) if rounding_bits is not None else 0
    return LayerCost(count * (1 + dropped), bits - dropped, count, bits, 0,
                     _reads_model_input(graph, la.layer.node, layer_outputs))


def _downstream(graph: Graph, node: NodeProto,
                layers: dict[int, LayerAnalysis]) -> tuple[list[LayerAnalysis], list[NodeProto]]:
    """The layers the node's outputs reach without crossing another layer, and the nodes passed
    on the way."""
    frontier, seen, found, between = list(node.output), set(), [], []
    while frontier:
        t = frontier.pop()
        if t in seen:
            continue
        seen.add(t)
        for consumer in graph.consumers.get(t, []):
            if id(consumer) in layers:
                found.append(layers[id(consumer)])
            else:
                between.append(consumer)
                frontier += list(consumer.output)
    return found, between


def _next_level(la: LayerAnalysis, fed: list[LayerAnalysis]) -> float | None:
    """How many accumulator units one level of the next quantizer spans, at its finest: the
    next scale over this layer's input scale times its largest weight scale (per-tensor scales
    of the inputs only; None when any is unknown)."""
    here = la.layer.input.scale_zero_point if la.layer.input is not None else None
    nexts = [o.layer.input.scale_zero_point for o in fed if o.layer.input is not None]
    if here is None or la.layer.weight is None or not nexts or None in nexts:
        return None
    unit = here[0] * float(np.max(np.abs(la.layer.weight.quantizer.scale)))
    return min(s for s, _ in nexts) / unit if unit > 0 else None


def _max_pools(graph: Graph, between: list[NodeProto]) -> int:
    """Bootstraps of the max pools among ``between``: Concrete takes one per window element of
    each output, and a quantizer after the pool is a lookup of its own per output (Concrete ML
    1.9's counts on Brevitas CNNs: 2x2 and 3x3 windows, strides 1 and 2, exactly)."""
    total = 0
    for pool in (n for n in between if n.op_type == "MaxPool"):
        outputs = _per_example(_shape(graph, pool.output[0]))
        if outputs is None:
            return 0
        window = int(np.prod(attr(pool, "kernel_shape", [1])))
        quantized = any(is_qonnx_quant(c) or c.op_type == "QuantizeLinear"
                        for c in graph.consumers.get(pool.output[0], []))
        total += outputs * (window + quantized)
    return total


def model_cost(analysis: ModelAnalysis, rounding_bits: int | None,
               widths: dict[str, int] | None = None) -> dict[str, LayerCost]:
    graph = analysis.graph
    outputs = frozenset(o for la in analysis.layers for o in la.layer.node.output)
    by_node = {id(la.layer.node): la for la in analysis.layers}
    norms: dict[str, int] = {}

    def norm(la: LayerAnalysis) -> int:  # once per layer: it reads every weight
        if la.name not in norms:
            norms[la.name] = norm2_bits(la)
        return norms[la.name]

    costs = {}
    for la in analysis.layers:
        cost = _layer_cost(graph, la, rounding_bits, (widths or {}).get(la.name), outputs)
        if cost.bits is not None:
            fed, between = _downstream(graph, la.layer.node, by_node)
            inputs = [other.layer.input.bits for other in fed if other.layer.input is not None]
            pools = _max_pools(graph, between)
            cost = replace(cost, norm2_bits=max([norm(la), *map(norm, fed)]),
                           next_input_bits=max(inputs, default=None), next_level=_next_level(la, fed),
                           tlu_count=cost.tlu_count + pools, pool_lookups=pools)
        costs[la.name] = cost
    return costs
