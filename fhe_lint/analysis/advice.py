"""When pruning is the wrong cure: the bit-widths at which a layer fits with no pruning at all.

Computed from the layer's own weights, requantized symmetrically per tensor to fewer bits (the
input range shrunk likewise, keeping its signedness), with the exact bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_lint import bounds
from fhe_lint.analysis.accumulators import LayerAnalysis, tap_range


@dataclass(frozen=True)
class BitAdvice:
    max_weight_bits: int | None  # with the current input bits; None: none fits
    max_input_bits: int | None  # with the current weight bits

    def text(self, weight_bits: int, input_bits: int) -> str:
        parts = []
        if self.max_weight_bits:
            parts.append(f"{self.max_weight_bits}-bit weights (with {input_bits}-bit inputs)")
        if self.max_input_bits:
            parts.append(f"{self.max_input_bits}-bit inputs (with {weight_bits}-bit weights)")
        if not parts:
            return "no smaller weight or input bit-width alone makes it fit"
        return "fits without pruning at " + " or ".join(parts)


_BLOCK = 1 << 16  # elements per block of rows: index temporaries stay in cache


def _fits(pos: np.ndarray, neg: np.ndarray, lo: int, hi: int, n_max: int) -> bool:
    """Whether the layer whose neurons' positive and negative tap sums are ``pos``/``neg`` fits."""
    if pos.size == 0:
        return True
    peak = max(int(np.max(pos)), -int(np.min(neg)), 0) * max(abs(lo), abs(hi))
    if 2 * peak >= 2**62:  # the ends could wrap around int64: exact Python integers instead
        pos, neg = pos.astype(object), neg.astype(object)
    a, b = lo * pos + hi * neg, hi * pos + lo * neg
    return bounds.int_bits(int(np.min(a)), int(np.max(b))) <= n_max


def _tap_sums(d: np.ndarray):
    """``sums(scale) -> (pos, neg)``: per neuron, the sums of the positive and negative taps of
    ``round(d * scale)``. Requantizing maps values to values, so for narrow weights a per-neuron
    table of value counts answers every scale at once; wide weights are re-summed block by block."""
    lo, hi = int(d.min(initial=0)), int(d.max(initial=0))
    step = max(1, _BLOCK // max(d.shape[1], 1))
    if hi - lo < 4096:
        values = np.arange(lo, hi + 1)
        counts = np.zeros((d.shape[0], values.size), dtype=np.int64)
        # one bincount per block of rows, each row's values shifted into its own bins
        offsets = (np.arange(step, dtype=np.int64) * values.size - lo)[:, None]
        index_type = np.int32 if step * values.size < 2**31 else np.int64
        for i in range(0, d.shape[0], step):
            block = d[i:i + step]
            index = np.add(block, offsets[:block.shape[0]], dtype=index_type)
            counts[i:i + step] = np.bincount(index.ravel(), minlength=block.shape[0] * values.size).reshape(-1, values.size)

        def from_table(scale: float) -> tuple[np.ndarray, np.ndarray]:
            v = np.round(values * scale).astype(np.int64)
            return counts @ np.maximum(v, 0), counts @ np.minimum(v, 0)

        return from_table

    def by_blocks(scale: float) -> tuple[np.ndarray, np.ndarray]:
        parts = [np.round(d[i:i + step] * scale).astype(np.int64) for i in range(0, d.shape[0], step)]
        return (np.concatenate([np.maximum(p, 0).sum(axis=1) for p in parts]),
                np.concatenate([np.minimum(p, 0).sum(axis=1) for p in parts]))

    return by_blocks


def bit_advice(la: LayerAnalysis, n_max: int) -> BitAdvice:
    weight, x = la.layer.weight, tap_range(la.layer)
    wb, ib = weight.bits, la.layer.input.bits
    sums = _tap_sums(weight.d)
    peak = max(int(np.abs(weight.d).max(initial=0)), 1)
    best_w = next((b for b in range(wb - 1, 1, -1)
                   if _fits(*sums((2 ** (b - 1) - 1) / peak), x.lo, x.hi, n_max)), None)
    pos, neg = sums(1.0)
    signed = x.lo < 0
    best_i = next((b for b in range(ib - 1, 0, -1)
                   if _fits(pos, neg, -(2 ** (b - 1)) if signed else 0, 2 ** (b - 1) - 1 if signed else 2**b - 1,
                            n_max)),
                  None)
    return BitAdvice(best_w, best_i)
