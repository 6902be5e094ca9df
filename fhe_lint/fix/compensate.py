"""Fixes that look at data: move the kept weights to make up for what pruning or a coarser grid
loses (OPTQ/OBS-style, under the exact bound), and correct each changed neuron's bias.

Layers are fixed in graph order, each against the inputs the already-fixed earlier layers
produce, toward the outputs the original model produced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_lint import bounds
from fhe_lint.analysis.accumulators import LayerAnalysis
from fhe_lint.analysis.execute import evaluate
from fhe_lint.analysis.taps import data_input, tap_groups
from fhe_lint.errors import UnsupportedModelError
from fhe_lint.fix.apply import apply, bias_input
from fhe_lint.fix.edits import LayerEdit
from fhe_lint.fix.solve import Problem, moments, solve
from fhe_lint.formats.graph import Graph
from fhe_lint.formats.quantizer import IntRange, Quantizer

DATA_OPS = frozenset({"Gemm", "MatMul", "Conv"})


@dataclass(frozen=True)
class Target:
    """What one layer's fix must reach: per neuron, the accumulator window and non-zero limit."""

    low: np.ndarray
    high: np.ndarray
    limit: np.ndarray


class Inputs:
    """Each layer's input on the data, in the original model and in the model fixed so far."""

    def __init__(self, graph: Graph, layers: list[LayerAnalysis], data: np.ndarray) -> None:
        self.graph, self.data = graph, data
        names = [data_input(la) for la in layers]
        self.original = dict(zip(names, evaluate(graph.standalone(), data, names)))

    def old(self, la: LayerAnalysis) -> np.ndarray:
        return self.original[data_input(la)]

    def new(self, la: LayerAnalysis, edits: list[LayerEdit]) -> np.ndarray:
        if not edits:
            return self.old(la)
        fixed, _ = apply(self.graph, edits)
        return evaluate(Graph(fixed, self.graph.data).standalone(), self.data, [data_input(la)])[0]


def neuron_scale(la: LayerAnalysis, q: Quantizer) -> np.ndarray:
    """One real value per level for each neuron; refused when a scale varies along a neuron's taps."""
    weight = la.layer.weight
    per_tap = weight.layout(np.broadcast_to(q.scale, weight.source_values.shape))
    if not (per_tap == per_tap[:, :1]).all():
        raise UnsupportedModelError(f"{la.name}: the weight scale varies within a neuron")
    return per_tap[:, 0].astype(np.float64)


def grid(la: LayerAnalysis, q: Quantizer) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the levels ``q - zp`` the quantizer's range allows."""
    weight = la.layer.weight
    zp = weight.layout(np.broadcast_to(q.zero_point, weight.source_values.shape))[:, 0].astype(np.int64)
    return q.range.lo - zp, q.range.hi - zp


def supported(la: LayerAnalysis) -> bool:
    layer = la.layer
    return (layer.op in DATA_OPS and layer.phases is None and layer.node.domain in ("", "ai.onnx")
            and layer.weight is not None and la.bounds is not None)


def refit(la: LayerAnalysis, rows: np.ndarray, x_old: np.ndarray, x_new: np.ndarray, target: Target,
          scale: np.ndarray, q_min: np.ndarray, q_max: np.ndarray, start: np.ndarray,
          baseline: np.ndarray, centred: bool, x: IntRange) -> tuple[np.ndarray, np.ndarray]:
    """New levels for ``rows`` (all others kept) and each neuron's bias correction.

    ``start`` is where the search begins, ``baseline`` a solution known to fit (both full
    ``(neurons, fan_in)`` level arrays at the new ``scale``); ``x`` is what one tap reads."""
    weight = la.layer.weight
    w_old = weight.d.astype(np.float64) * neuron_scale(la, weight.quantizer)[:, None]
    levels = start.astype(np.int64).copy()
    keep = np.setdiff1d(np.arange(len(levels)), rows)
    levels[keep] = baseline[keep]
    delta = np.zeros(len(levels))
    old_groups = dict((int(n[0]), t) for n, t in tap_groups(la, x_old))
    for neurons, taps_new in tap_groups(la, x_new):
        r = np.intersect1d(neurons, rows)
        if r.size == 0:
            continue
        taps_old = old_groups[int(neurons[0])]
        H, c = moments(taps_new, taps_old, w_old[r], centred)
        p = Problem(H, c, scale[r], x.lo, x.hi, target.low[r], target.high[r], q_min[r], q_max[r], target.limit[r])
        levels[r] = solve(p, start[r], baseline[r])
        if centred:
            delta[r] = taps_old.mean(axis=0) @ w_old[r].T - taps_new.mean(axis=0) @ (levels[r] * scale[r, None]).T
    return levels, delta


def target(la: LayerAnalysis, bits: np.ndarray, limit: np.ndarray) -> Target:
    """Windows from per-neuron bit limits (-1: none) in the layer's signedness."""
    low, high = bounds.window(np.where(bits > 0, bits, 62), la.bounds.signed)
    return Target(np.asarray(low, dtype=np.int64), np.asarray(high, dtype=np.int64), limit)


def edit(la: LayerAnalysis, levels: np.ndarray, delta: np.ndarray, strategy: str, graph: Graph,
         **quantizers) -> LayerEdit:
    """The edit that sets ``levels`` where they differ (all of them on a new grid)."""
    d, index = la.layer.weight.d, la.layer.weight.source_index()
    changed = np.ones(d.shape, dtype=bool) if quantizers.get("weight_quantizer") else levels != d
    pruned = int(np.count_nonzero((d != 0) & (levels == 0)))
    moved = int(np.count_nonzero((levels != d) & (levels != 0)))
    has_bias = bias_input(graph, la) is not None and np.abs(delta).max(initial=0) > 0
    return LayerEdit(la, index[changed], levels[changed], strategy, pruned, moved,
                     bias_delta=delta if has_bias else None, **quantizers)
