"""Which ``rounding_threshold_bits`` would cut the cost, and what the calibration data says it
costs in accuracy.

A layer's lookup reads its accumulator only to requantize it to the next layer's input. One level
of that quantizer spans ``level`` accumulator units (its scale over the layer's input scale times
its weight scale, when the scales are known; else the observed spread over its ``2**a`` levels),
and rounding away the low ``k`` bits (an error of at most ``2**(k-1)``) moves an output by at most
a quarter level while ``2**(k-1) <= level / 4``. At half a level the 2-bit digits MLP lost 1.1
points in Concrete ML's simulation; a quarter keeps every fixture within 0.1 point
(``bench/rounding_advice.py``). That ``k`` is the layer's free rounding; Concrete ML rounds every
layer to one width, so the model's advice is the widest of the layers' rounded widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fhe_lint.bounds import int_bits


MAX_ROUNDING_BITS = 8  # the widest rounding_threshold_bits Concrete ML accepts


@dataclass(frozen=True)
class LayerRounding:
    bits: int  # the width its lookups could be rounded to
    dropped: int  # low accumulator bits dropped
    error: float  # the worst rounding error, as a share of the observed accumulator spread

    def as_json(self) -> dict[str, float]:
        return {"bits": self.bits, "dropped": self.dropped, "error": self.error}


def layer_rounding(lo: int, hi: int, next_input_bits: int, level: float | None = None) -> LayerRounding:
    """The narrowest rounding of an accumulator observed in ``[lo, hi]`` whose error is at most a
    quarter of the next quantizer's level."""
    bits = int_bits(lo, hi)
    spread = max(1, hi - lo)
    level = spread / 2**next_input_bits if level is None else level
    dropped = max(0, min(bits - 1, math.floor(math.log2(level / 2)))) if level >= 2 else 0
    return LayerRounding(bits - dropped, dropped, (2 ** (dropped - 1) if dropped else 0) / spread)


def advised_bits(layers: dict[str, LayerRounding]) -> int | None:
    """Concrete ML rounds every layer to one width: the widest layer's rounding, when Concrete ML
    accepts it (None: none it accepts keeps the margin, or no layer to round)."""
    bits = max((r.bits for r in layers.values()), default=None)
    return bits if bits is not None and bits <= MAX_ROUNDING_BITS else None
