"""Float models with assumed bit-widths (``--weight-bits``, ``--input-bits``): what Concrete ML's
post-training quantization (``compile_onnx_model``) will make of them."""

from __future__ import annotations

import numpy as np

from fhe_lint.formats.quantizer import InputRange, IntRange, Quantizer, integer_range


def symmetric(bits: int, weights: np.ndarray, node: str) -> Quantizer:
    """Concrete ML's post-training weight quantizer: symmetric, per tensor, ``bits`` bits."""
    grid = integer_range(bits, signed=True, narrow=True)
    peak = float(np.abs(weights).max(initial=0.0))
    scale = np.array(peak / grid.hi if peak > 0 and grid.hi > 0 else 1.0)
    return Quantizer(node, bits, grid, scale, np.zeros(()), "ROUND")


def assumed_input(bits: int) -> InputRange:
    """An unquantized layer input, as Concrete ML's post-training quantization makes it: unsigned."""
    return InputRange(IntRange(0, 2**bits - 1), bits, (f"assumed {bits}-bit",))
