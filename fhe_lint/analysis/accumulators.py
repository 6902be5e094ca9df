"""Per-layer accumulator analysis: what rules read and what reports show.

The accumulator Concrete ML encrypts is ``sum_i q_x[i] * (q_w[k, i] - zp_w[k])`` (bias and
input zero-point are folded into the table lookup); see DESIGN.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fhe_lint import bounds
from fhe_lint.formats.graph import Graph
from fhe_lint.formats.layers import LayerKind, LinearLayer, find_linear_layers
from fhe_lint.formats.quantizer import IntRange
from fhe_lint.settings import Settings


@dataclass(frozen=True)
class LayerBounds:
    """Per-neuron arrays for one analysable layer (input and weight ranges known)."""

    lo: np.ndarray
    hi: np.ndarray
    bits: np.ndarray  # bits of each neuron within the layer's single integer type
    nonzero: np.ndarray
    omega: int | None  # None for weightless sums (pools)
    runtime: IntRange | None = None  # QDQ/QOperator: what the runtime's int32 accumulator holds

    @property
    def range(self) -> IntRange:
        return IntRange(int(self.lo.min()), int(self.hi.max()))

    @property
    def signed(self) -> bool:
        return bool((self.lo < 0).any())

    def wider_than(self, n_max: int) -> list[tuple[int, int, int, int]]:
        """``(neuron, lo, hi, bits)`` of every neuron needing more than ``n_max`` bits, as ints."""
        over = np.flatnonzero(self.bits > n_max)
        return list(zip(over.tolist(), self.lo[over].tolist(), self.hi[over].tolist(), self.bits[over].tolist()))

    def denser_than(self, limit: int) -> list[tuple[int, int]]:
        """``(neuron, non-zero count)`` of every neuron keeping more than ``limit`` non-zeros."""
        over = np.flatnonzero(self.nonzero > limit)
        return list(zip(over.tolist(), self.nonzero[over].tolist()))


@dataclass(frozen=True)
class LayerAnalysis:
    layer: LinearLayer
    bounds: LayerBounds | None  # None when the range is unknown (FHE005)

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def prunable(self) -> bool:
        """Whether zeroing weights can shrink its accumulator (a sum without weights cannot)."""
        return self.layer.kind is LayerKind.WEIGHTED


@dataclass(frozen=True)
class ModelAnalysis:
    path: Path
    graph: Graph
    layers: tuple[LayerAnalysis, ...]
    settings: Settings
    complaint: str | None = None  # onnx.checker's objection to the file (FHE006)


def tap_range(layer: LinearLayer) -> IntRange:
    """The values one tap can read: the input range, plus the zeros of padding."""
    assert layer.input is not None
    return layer.input.range.with_zero() if layer.zero_padded else layer.input.range


def _interval(layer: LinearLayer, d: np.ndarray, x: IntRange) -> tuple[np.ndarray, np.ndarray]:
    if layer.phases is None:
        return bounds.accumulator_interval(d, x.lo, x.hi)
    parts = [bounds.accumulator_interval(d[:, layer.phases == p], x.lo, x.hi) for p in np.unique(layer.phases)]
    return np.min([lo for lo, _ in parts], axis=0), np.max([hi for _, hi in parts], axis=0)


def _runtime_range(layer: LinearLayer) -> IntRange | None:
    """Shift the raw-input interval to inputs minus their zero-point, then add the int32 bias."""
    if layer.runtime is None or layer.weight is None:
        return None
    zp, bias = layer.runtime
    x = tap_range(layer)
    r_lo, r_hi = _interval(layer, layer.weight.d, IntRange(x.lo - zp, x.hi - zp))
    if bias is not None and bias.size in (1, r_lo.size):
        r_lo, r_hi = r_lo + bias, r_hi + bias
    return IntRange(int(np.min(r_lo)), int(np.max(r_hi)))


def layer_bounds(layer: LinearLayer, n_max: int) -> LayerBounds:
    x = tap_range(layer)
    if layer.weight is None:  # a sum of `taps` inputs
        lo, hi = np.array([layer.taps * x.lo], dtype=object), np.array([layer.taps * x.hi], dtype=object)
        nonzero, omega = np.array([layer.taps]), None
    else:
        d = layer.weight.d
        lo, hi = _interval(layer, d, x)
        nonzero, omega = bounds.nonzero_count(d), bounds.omega(n_max, layer.weight.bits, layer.input.bits)
    bits, _ = bounds.layer_bits(lo, hi)
    return LayerBounds(lo, hi, bits, nonzero, omega, _runtime_range(layer))


def analyse_layer(layer: LinearLayer, n_max: int) -> LayerAnalysis:
    if layer.kind is LayerKind.UNKNOWN:
        return LayerAnalysis(layer, None)
    return LayerAnalysis(layer, layer_bounds(layer, n_max))


def analyse(path: Path, graph: Graph, settings: Settings, complaint: str | None = None) -> ModelAnalysis:
    layers = tuple(analyse_layer(layer, settings.n_max) for layer in find_linear_layers(graph, settings))
    return ModelAnalysis(path, graph, layers, settings, complaint)
