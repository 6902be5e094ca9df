"""FHE001 accumulator-overflow

## What it does
Computes, for every neuron (output unit of a Gemm/MatMul, output channel of a Conv), the exact
worst-case value of its integer accumulator ``sum_i q_x[i] * (q_w[k, i] - zp_w[k])`` over every
input the input quantizer can emit, and reports each neuron whose range needs more than
``n_max`` bits (16 by default) in the layer's integer type.

## Why it matters
Concrete ML feeds each accumulator to a programmable bootstrap (a table lookup) limited to
``n_max`` bits. A model whose worst case is wider fails to compile, or, when compiled on a
calibration set that never reaches the worst case, overflows silently on a later input.
The bound is exact (attained by some input), so this rule has no false positives.

## Example
A 6-bit MLP layer whose neuron 3 reaches ``[-72150, 70875]`` needs 18 bits::

    model.onnx:/fc1/Gemm[neuron 3]: FHE001 worst-case accumulator [-72150, 70875] needs 18 bits > n_max 16

## Fix
``fhe-lint model.onnx --fix`` prunes the smallest-magnitude weights of each violating neuron
(and only those) until its worst case fits; in a strided ConvTranspose, each output phase's
taps separately. If that would prune more than ``--max-prune`` of a layer, lower the weight or
input bit-width instead (fewer bits shrink every product). A sum without weights (a pool, an
encrypted product) cannot be pruned: its diagnostic is not fixable, and says so.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from fhe_lint.diagnostics import Diagnostic, Requirement, Severity
from fhe_lint.rule import FixAvailability, Rule, neurons_phrase

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis

_NO_WEIGHTS = "; a sum without weights cannot be pruned: give its input fewer bits"


def check(analysis: ModelAnalysis) -> Iterator[Diagnostic]:
    n_max = analysis.settings.n_max
    for la in analysis.layers:
        b = la.bounds
        if b is None:
            continue
        kind = "signed" if b.signed else "unsigned"
        prunable = la.prunable
        fix = Requirement(accumulator_bits=n_max) if prunable else None
        for k, lo, hi, bits in b.wider_than(n_max):
            yield RULE.diagnostic(
                f"worst-case accumulator [{lo}, {hi}] needs {bits} bits ({kind} layer) > n_max {n_max}"
                + ("" if prunable else _NO_WEIGHTS),
                node=la.name, neuron=k, fix=fix, bits=bits, limit=n_max, range=[lo, hi], signed=b.signed,
            )


def summarize(found: Sequence[Diagnostic], neurons: int | None) -> str:
    count, head, which = neurons_phrase(found, neurons)
    worst = max(found, key=lambda d: (d.data["bits"], max(-d.data["range"][0] - 1, d.data["range"][1])))
    lo, hi = worst.data["range"]
    kind = "signed" if worst.data["signed"] else "unsigned"
    return (f"{head} {'needs' if count == 1 else 'need'} up to {worst.data['bits']} bits > n_max "
            f"{worst.data['limit']} ({kind} layer; worst [{lo}, {hi}] at neuron {worst.neuron}): {which}"
            + ("" if worst.fixable else _NO_WEIGHTS))


RULE = Rule(
    code="FHE001",
    name="accumulator-overflow",
    severity=Severity.ERROR,
    fix=FixAvailability.SOMETIMES,
    summary="a neuron's exact worst-case accumulator needs more than n_max bits",
    doc=__doc__,
    check=check,
    summarize=summarize,
)
