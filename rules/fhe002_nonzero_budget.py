"""FHE002 nonzero-budget

## What it does
Counts each neuron's non-zero weights (taps with ``q_w != zp_w``) and reports the neurons that
keep more than ``floor(Omega * multiplier)``, where Concrete ML's pruning budget is
``Omega = floor((2^n_max - 1) / ((2^weight_bits - 1) * (2^input_bits - 1)))``.

## Why it matters
Omega is the count of non-zero weights at which even the largest weights and inputs cannot
overflow: below it a neuron is safe whatever its weights become after retraining. Concrete ML's
built-in networks keep ``Omega * n_hidden_neurons_multiplier`` non-zeros per neuron, but prune
layer-globally, so single neurons can exceed it. It is a warning because FHE001's exact bound is
the actual guarantee; ``--strict`` makes it fail the run.

## Example
With 2-bit weights and inputs, Omega is 7281; with 6-bit ones it is 16::

    model.onnx:/fc1/Gemm[neuron 0]: FHE002 64 non-zero weights > budget 16 = floor(Omega 16 x 1.0)

## Fix
``fhe-lint model.onnx --fix --strict`` prunes each violating neuron's smallest weights down to
the budget. This prunes far more than FHE001 needs and costs accuracy; prefer the exact bound
unless the weights will change after the check (retraining, fine-tuning).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from fhe_lint.diagnostics import Diagnostic, Requirement, Severity
from fhe_lint.rule import FixAvailability, Rule, neurons_phrase

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis


def nonzero_budget(omega: int, multiplier: float) -> int:
    """Non-zero weights a neuron may keep: ``floor(Omega * multiplier)``."""
    return math.floor(omega * multiplier)


def check(analysis: ModelAnalysis) -> Iterator[Diagnostic]:
    multiplier = analysis.settings.multiplier
    for la in analysis.layers:
        b = la.bounds
        if b is None or b.omega is None or b.omega < 1:  # Omega < 1 is FHE003; pools have no weights
            continue
        limit = nonzero_budget(b.omega, multiplier)
        for k, count in b.denser_than(limit):
            yield RULE.diagnostic(
                f"{count} non-zero weights > budget {limit} = floor(Omega {b.omega} x {multiplier:g})",
                node=la.name, neuron=k, fix=Requirement(nonzero=limit), nonzero=count, limit=limit, omega=b.omega,
                multiplier=multiplier,
            )


def summarize(found: Sequence[Diagnostic], neurons: int | None) -> str:
    count, head, which = neurons_phrase(found, neurons)
    d = found[0]
    most = max(x.data["nonzero"] for x in found)
    return (f"{head} {'keeps' if count == 1 else 'keep'} up to {most} non-zero weights > budget {d.data['limit']} "
            f"= floor(Omega {d.data['omega']} x {d.data['multiplier']:g}): {which}")


RULE = Rule(
    code="FHE002",
    name="nonzero-budget",
    severity=Severity.WARNING,
    fix=FixAvailability.SOMETIMES,
    summary="a neuron keeps more non-zero weights than floor(Omega * multiplier)",
    doc=__doc__,
    check=check,
    summarize=summarize,
)
