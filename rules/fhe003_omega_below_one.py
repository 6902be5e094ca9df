"""FHE003 omega-below-one

## What it does
Reports a layer whose weight and input bit-widths alone give ``Omega < 1``:
``(2^weight_bits - 1) * (2^input_bits - 1) > 2^n_max - 1``.

## Why it matters
With Omega 0, a single non-zero weight at its extreme times an extreme input may already need
more than ``n_max`` bits: no number of non-zero weights is safe by Concrete ML's budget, and
pruning cannot be the cure.

## Example
9-bit weights with 8-bit inputs: ``511 * 255 = 130305 > 65535``::

    model.onnx:/fc1/Gemm: FHE003 Omega is 0: 9-bit weights x 8-bit inputs exceed 16 bits

## Fix
Quantize the layer with fewer bits (for example ``weight_bit_width`` and ``bit_width`` of the
Brevitas layers), then retrain or recalibrate.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.rule import FixAvailability, Rule

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis


def check(analysis: ModelAnalysis) -> Iterator[Diagnostic]:
    n_max = analysis.settings.n_max
    for la in analysis.layers:
        if la.bounds is None or la.bounds.omega is None or la.bounds.omega >= 1:
            continue
        wb, ib = la.layer.weight.bits, la.layer.input.bits
        yield RULE.diagnostic(
            f"Omega is 0: {wb}-bit weights x {ib}-bit inputs exceed {n_max} bits; lower the bit-widths",
            node=la.name, weight_bits=wb, input_bits=ib, limit=n_max,
        )


RULE = Rule(
    code="FHE003",
    name="omega-below-one",
    severity=Severity.ERROR,
    fix=FixAvailability.NONE,
    summary="Omega < 1: the bit-widths alone make any non-zero weight unsafe",
    doc=__doc__,
    check=check,
)
