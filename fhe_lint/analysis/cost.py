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
from fhe_lint.formats.graph import Graph
from fhe_lint.formats.ops import LAYOUT_OPS


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


def layer_cost(graph: Graph, la: LayerAnalysis, rounding_bits: int | None) -> LayerCost:
    bits = int(la.bounds.bits.max(initial=1)) if la.bounds is not None else None
    if rounding_bits is not None and bits is not None:
        bits = min(bits, rounding_bits)
    out = la.layer.node.output[0]
    count = 0 if _reaches_output_in_clear(graph, out) else _per_example(graph.shape(out))
    return LayerCost(count, bits if count else None)


def model_cost(analysis: ModelAnalysis, rounding_bits: int | None) -> dict[str, LayerCost]:
    return {la.name: layer_cost(analysis.graph, la, rounding_bits) for la in analysis.layers}
