"""FHE007 wide-lookup

## What it does
Reports a layer whose outputs go through table lookups (programmable bootstraps) wider than
the budget given by ``--max-lookup-bits N`` (config ``max-lookup-bits``); off unless a budget
is set. A lookup is as wide as the layer's worst-case accumulator, or Concrete ML's
``rounding_threshold_bits`` (``--rounding-bits``) when that is narrower.

## Why it matters
Fitting 16 bits is necessary, not sufficient: a lookup's cost grows steeply with its width
(about 200-fold from 7 to 15 bits in Concrete's own figures), and the count of lookups is fixed
by the architecture. Concrete ML's CIFAR example runs in about 9 hours with 13-bit lookups and
40 s with rounding to 6 bits. A budget makes the cost a checked property, as the 16-bit limit is.

## Example
With ``--max-lookup-bits 12``::

    model.onnx:/fc1/Gemm: FHE007 80 table lookups of 16 bits > budget 12 (give --rounding-bits 8, as Concrete ML's rounding_threshold_bits, or fewer bits)

## Fix
Compile with ``rounding_threshold_bits`` (Concrete ML) at the budget, which drops low bits of
the accumulator before the lookup at some accuracy cost, or lower the layer's weight or input
bit-width (the bit-width advice of FHE001 says which fit).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.rule import FixAvailability, Rule

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis


def check(analysis: ModelAnalysis) -> Iterator[Diagnostic]:
    budget = analysis.settings.max_lookup_bits
    if budget is None:
        return
    from fhe_lint.analysis.cost import model_cost  # numpy: only when a budget asks for it
    from fhe_lint.analysis.rounding import MAX_ROUNDING_BITS

    for name, cost in model_cost(analysis, analysis.settings.rounding_bits).items():
        if cost.tlu_bits is not None and cost.tlu_bits > budget:
            yield RULE.diagnostic(
                f"{cost.tlu_count} table lookups of {cost.tlu_bits} bits > budget {budget} (give --rounding-bits "
                f"{min(budget, MAX_ROUNDING_BITS)}, as Concrete ML's rounding_threshold_bits, or fewer bits)",
                node=name, bits=cost.tlu_bits, limit=budget, tlu_count=cost.tlu_count,
            )


RULE = Rule(
    code="FHE007",
    name="wide-lookup",
    severity=Severity.WARNING,
    fix=FixAvailability.NONE,
    summary="a layer's table lookups are wider than the --max-lookup-bits budget (off by default)",
    doc=__doc__,
    check=check,
)
