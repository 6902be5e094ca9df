"""Per-layer accumulator analysis: what rules read and what reports show.

The accumulator Concrete ML encrypts is ``sum_i q_x[i] * (q_w[k, i] - zp_w[k])`` (bias and
input zero-point are folded into the table lookup); see DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fhe_lint import bounds
from fhe_lint.graph import Graph
from fhe_lint.layers import LinearLayer, find_linear_layers
from fhe_lint.quantizers import IntRange
from fhe_lint.settings import Settings


@dataclass(frozen=True)
class LayerBounds:
    """Per-neuron arrays for one analysable layer (input and weight ranges known)."""

    lo: np.ndarray
    hi: np.ndarray
    bits: np.ndarray  # bits of each neuron within the layer's single integer type
    nonzero: np.ndarray
    omega: int

    @property
    def range(self) -> IntRange:
        return IntRange(int(self.lo.min()), int(self.hi.max()))

    @property
    def signed(self) -> bool:
        return bool((self.lo < 0).any())


@dataclass(frozen=True)
class LayerAnalysis:
    layer: LinearLayer
    bounds: LayerBounds | None  # None when the range is unknown (FHE005)

    @property
    def name(self) -> str:
        return self.layer.name


@dataclass(frozen=True)
class ModelAnalysis:
    path: Path
    graph: Graph
    layers: tuple[LayerAnalysis, ...]
    settings: Settings


def tap_range(layer: LinearLayer) -> IntRange:
    """The values one tap can read: the input range, plus the zeros of padding."""
    assert layer.input is not None
    return layer.input.range.with_zero() if layer.zero_padded else layer.input.range


def layer_bounds(d: np.ndarray, x: IntRange, weight_bits: int, input_bits: int, n_max: int) -> LayerBounds:
    lo, hi = bounds.accumulator_interval(d, x.lo, x.hi)
    signed = bool((lo < 0).any()) if lo.size else False
    return LayerBounds(
        lo=lo,
        hi=hi,
        bits=bounds.range_bits(lo, hi, signed=signed),
        nonzero=bounds.nonzero_count(d),
        omega=bounds.omega(n_max, weight_bits, input_bits),
    )


def analyse_layer(layer: LinearLayer, n_max: int) -> LayerAnalysis:
    if layer.weight is None or layer.input is None:
        return LayerAnalysis(layer, None)
    return LayerAnalysis(
        layer, layer_bounds(layer.weight.d, tap_range(layer), layer.weight.bits, layer.input.bits, n_max)
    )


def analyse(path: Path, graph: Graph, settings: Settings) -> ModelAnalysis:
    layers = tuple(analyse_layer(layer, settings.n_max) for layer in find_linear_layers(graph))
    return ModelAnalysis(path, graph, layers, settings)
