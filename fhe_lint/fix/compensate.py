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
from fhe_lint.formats.channels_last import is_channels_last
from fhe_lint.fix.apply import apply, bias_input
from fhe_lint.fix.edits import LayerEdit, changed
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


def run(graph: Graph, data: np.ndarray, names: list[str]) -> list[np.ndarray]:
    """Tensors ``names`` of a model, original or fixed (``Fixed.graph()``), on ``data``."""
    return evaluate(graph.standalone(), data, names)


def first_output(graph: Graph, data: np.ndarray) -> np.ndarray:
    """The model's first output on ``data``, one row per input."""
    (out,) = run(graph, data, [graph.model.graph.output[0].name])
    return out.reshape(len(data), -1).astype(np.float64)


def compare(before: np.ndarray, after: np.ndarray) -> tuple[float, float, float]:
    """Prediction agreement (argmax per row), the largest and the mean squared output change."""
    agreement = float(np.mean(before.argmax(axis=1) == after.argmax(axis=1)))
    return agreement, float(np.abs(after - before).max(initial=0.0)), float(np.mean((after - before) ** 2))


class Inputs:
    """Each layer's input on the data, and the model's output, in the original model (evaluated
    once) and in the model fixed so far."""

    def __init__(self, graph: Graph, layers: list[LayerAnalysis], data: np.ndarray) -> None:
        self.graph, self.data = graph, data
        names = [data_input(la) for la in layers]
        output = graph.model.graph.output[0].name
        values = evaluate(graph.standalone(), data, [*names, output])
        self.original = dict(zip(names, values))
        self.reference = values[-1].reshape(len(data), -1).astype(np.float64)

    def old(self, la: LayerAnalysis) -> np.ndarray:
        return self.original[data_input(la)]

    def new(self, la: LayerAnalysis, edits: list[LayerEdit]) -> np.ndarray:
        if not edits:
            return self.old(la)
        return run(apply(self.graph, edits).graph(), self.data, [data_input(la)])[0]

    def output_error(self, edits: list[LayerEdit]) -> float:
        """Mean squared change of the model's output once ``edits`` are made."""
        return compare(self.reference, first_output(apply(self.graph, edits).graph(), self.data))[2]


def neuron_grid(la: LayerAnalysis, q: Quantizer) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per neuron, the real value of one level and the levels ``q - zp`` the quantizer's range
    allows; None when a scale or zero-point varies along a neuron's taps (no one grid per row)."""
    weight = la.layer.weight
    scale, zp = (weight.layout(np.broadcast_to(v, weight.source_values.shape)) for v in (q.scale, q.zero_point))
    if not ((scale == scale[:, :1]).all() and (zp == zp[:, :1]).all()):
        return None
    zp = zp[:, 0].astype(np.int64)
    return scale[:, 0].astype(np.float64), q.range.lo - zp, q.range.hi - zp


def supported(la: LayerAnalysis) -> bool:
    """Whether the layer's kept weights can be re-solved on the data: a plain product, and a
    fan-in K whose two K x K float64 input moments fit ``MOMENTS_BYTES`` (K <= 5,792); a wider
    layer keeps L1 pruning and plain rounding, as the report's per-layer strategy says."""
    layer = la.layer
    return (layer.op in DATA_OPS and layer.phases is None
            and (layer.node.domain in ("", "ai.onnx") or is_channels_last(layer.node))
            and layer.weight is not None and la.bounds is not None
            and 2 * 8 * layer.weight.d.shape[1] ** 2 <= MOMENTS_BYTES)


MOMENTS_BYTES = 512 << 20


def refit(la: LayerAnalysis, rows: np.ndarray, x_old: np.ndarray, x_new: np.ndarray, target: Target,
          scale: np.ndarray, q_min: np.ndarray, q_max: np.ndarray, start: np.ndarray,
          baseline: np.ndarray, centred: bool, x: IntRange) -> tuple[np.ndarray, np.ndarray]:
    """New levels for ``rows`` (all others kept) and each neuron's bias correction.

    ``start`` is where the search begins, ``baseline`` a solution known to fit (both full
    ``(neurons, fan_in)`` level arrays at the new ``scale``); ``x`` is what one tap reads."""
    weight = la.layer.weight
    w_old = weight.d.astype(np.float64) * neuron_grid(la, weight.quantizer)[0][:, None]
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
    # on a new grid every float weight must be rewritten to land on its level, changed or not
    at = np.ones(d.shape, dtype=bool) if quantizers.get("weight_quantizer") else levels != d
    has_bias = bias_input(graph, la) is not None and np.abs(delta).max(initial=0) > 0
    pruned, moved = changed(d, levels)
    return LayerEdit.at(la, index[at], levels[at], strategy=strategy, pruned=pruned, moved=moved,
                        bias_delta=delta if has_bias else None, **quantizers)
