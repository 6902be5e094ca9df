"""FHE005 unknown-range

## What it does
Reports a linear layer (Gemm, MatMul, Conv) whose input or weight is not quantized, so that no
integer range, hence no accumulator bound, exists for it; a pool or product whose summed
dimension is symbolic; and an op that looks like a linear layer (a Conv, MatMul, Gemm or
Attention in any domain, a custom op multiplying run-time data by a constant matrix) that
fhe-lint cannot read. Each says why.

## Why it matters
Without a quantizer in front, Concrete ML picks the bit-widths itself at compile time (post-
training quantization), or refuses a QAT model; fhe-lint cannot prove anything about that
layer and will not pretend to. A silent skip would turn "unknown" into "safe".

## Example
A first convolution reading the raw float image::

    model.onnx:Conv_5: FHE005 range unknown: its input 'x.7' is a model input with no quantizer in front

## Fix
Put a quantizer in front of the layer (a Brevitas ``QuantIdentity`` before the first layer, a
``QuantReLU`` after a BatchNorm), or quantize the weight (``QuantConv2d``/``QuantLinear``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.rule import FixAvailability, Rule

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis


def check(analysis: ModelAnalysis) -> Iterator[Diagnostic]:
    for la in analysis.layers:
        if la.bounds is None:
            yield RULE.diagnostic(f"range unknown: {la.layer.unknown}", node=la.name)


RULE = Rule(
    code="FHE005",
    name="unknown-range",
    severity=Severity.ERROR,
    fix=FixAvailability.NONE,
    summary="a linear layer whose input or weight range is unknown (unquantized)",
    doc=__doc__,
    check=check,
)
