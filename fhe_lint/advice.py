"""When pruning is the wrong cure: the bit-widths at which a layer fits with no pruning at all.

Computed from the layer's own weights, requantized symmetrically per tensor to fewer bits (the
input range shrunk likewise, keeping its signedness), with the exact bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_lint import bounds
from fhe_lint.analysis import LayerAnalysis, tap_range


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


def _fits(d: np.ndarray, lo: int, hi: int, n_max: int) -> bool:
    a, b = bounds.accumulator_interval(d, lo, hi)
    return bool(a.size == 0 or bounds.int_bits(int(np.min(a)), int(np.max(b))) <= n_max)


def bit_advice(la: LayerAnalysis, n_max: int) -> BitAdvice:
    weight, x = la.layer.weight, tap_range(la.layer)
    wb, ib = weight.bits, la.layer.input.bits
    d = weight.d.astype(np.int64)
    peak = int(np.abs(d).max(initial=0))
    best_w = next((b for b in range(wb - 1, 1, -1)
                   if _fits(np.round(d * ((2 ** (b - 1) - 1) / max(peak, 1))).astype(np.int64), x.lo, x.hi, n_max)),
                  None)
    signed = x.lo < 0
    best_i = next((b for b in range(ib - 1, 0, -1)
                   if _fits(d, -(2 ** (b - 1)) if signed else 0, 2 ** (b - 1) - 1 if signed else 2**b - 1, n_max)),
                  None)
    return BitAdvice(best_w, best_i)
