"""What a model will cost in FHE, before any compile: its table lookups (programmable
bootstraps) and their width.

In Concrete ML every encrypted output of a linear layer goes through one table lookup that
holds everything up to the next layer's integers (bias, rescale, activation, the next
quantizer): one lookup per output element, as wide as the accumulator (or Concrete ML's
``rounding_threshold_bits`` when given). The last layer's outputs are dequantized by the
client, in the clear: no lookup (Concrete ML's counts on the fixtures: cnn_w3a3's 492 =
6 x 8 x 8 + 12 x 3 x 3 outputs of its two convolutions; padding costs none). An output whose
shape is unknown leaves the count unknown. Not modelled yet: ops Concrete implements with
several lookups per output (max pooling's comparisons).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis, ModelAnalysis
from fhe_lint.formats.channels_last import channels_at_end
from fhe_lint.formats.graph import Graph, attr
from fhe_lint.formats.layers import SPECS, spec_key
from fhe_lint.formats.ops import LAYOUT_OPS
from fhe_lint.io.onnx_proto import NodeProto


@dataclass(frozen=True)
class LayerCost:
    tlu_count: int | None  # table lookups per inference (None: not modelled here)
    tlu_bits: int | None  # their width (None: no lookup, or the accumulator is unknown)


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


def layer_cost(graph: Graph, la: LayerAnalysis, rounding_bits: int | None) -> LayerCost:
    bits = int(la.bounds.bits.max(initial=1)) if la.bounds is not None else None
    if rounding_bits is not None and bits is not None:
        bits = min(bits, rounding_bits)
    out = la.layer.node.output[0]
    count = 0 if _reaches_output_in_clear(graph, out) else _outputs(graph, la)
    if count is None:
        count = _per_example(graph.shape(out))  # an op the arithmetic above does not cover
    return LayerCost(count, bits if count else None)


def model_cost(analysis: ModelAnalysis, rounding_bits: int | None) -> dict[str, LayerCost]:
    return {la.name: layer_cost(analysis.graph, la, rounding_bits) for la in analysis.layers}
