"""The whole fix of one model: plan from the kept diagnostics, apply on a copy, re-lint, then
accept or refuse (nothing is written here; the runner writes an accepted model atomically).

``plan`` decides which weights go, ``apply`` builds the fixed model; strategies beyond L1
pruning belong beside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_lint.errors import FixError
from fhe_lint.fix.apply import apply
from fhe_lint.fix.plan import plan
from fhe_lint.formats.graph import Graph
from fhe_lint.io.onnx_proto import ModelProto
from fhe_lint.linter import LintResult, lint_model
from fhe_lint.report.model import FixSummary, neuron_bits


@dataclass(frozen=True)
class FixOutcome:
    """What a fix did: the report's part of it (``summary``; the runner adds where it wrote), the
    lint of the model to report, and the fixed model to write (None when nothing is written)."""

    result: LintResult
    summary: FixSummary
    model: ModelProto | None = None
    touched: frozenset[str] = frozenset()  # initializers changed in place (a copy gets a new name)


def impact(model: Graph, fixed: Graph, data: np.ndarray) -> tuple[float, float]:
    """Prediction agreement (argmax of the first output) and the largest output change."""
    from fhe_lint.analysis.execute import evaluate

    name = model.model.graph.output[0].name
    (before,), (after,) = evaluate(model.standalone(), data, [name]), evaluate(fixed.standalone(), data, [name])
    before, after = before.reshape(len(data), -1), after.reshape(len(data), -1)
    agreement = float(np.mean(before.argmax(axis=1) == after.argmax(axis=1)))
    return agreement, float(np.abs(after.astype(np.float64) - before).max(initial=0.0))


def _blocking(result: LintResult) -> str | None:
    """Why no pruning can make this model pass: a failing finding that carries no fix."""
    blocked = [d for d in result.diagnostics if d.fails(result.analysis.settings.strict) and d.fix is None]
    if not blocked:
        return None
    d = blocked[0]
    more = f" (and {len(blocked) - 1} more finding(s) no fix can resolve)" if len(blocked) > 1 else ""
    return f"pruning cannot fix {d.code} at {d.place or 'the model'}: {d.message}{more}"


def fix_model(result: LintResult, data: np.ndarray | None = None) -> FixOutcome:
    s = result.analysis.settings
    before = neuron_bits(result)

    def refuse(pruned: dict[str, int], reason: str, *impact: float) -> FixOutcome:
        return FixOutcome(result, FixSummary(pruned, reason, None, before, *impact))

    blocked = _blocking(result)
    if blocked is not None:
        return refuse({}, blocked)
    activity = None
    if s.fix_order == "activation":
        if data is None:
            raise FixError("--fix-order activation needs --calibration data")
        from fhe_lint.analysis.calibration import tap_activity

        activity = tap_activity(result.analysis, data)
    prunes = plan(result.analysis, result.diagnostics, activity)
    pruned = {p.layer.name: p.pruned for p in prunes}
    if not prunes:
        return FixOutcome(result, FixSummary({}, bits_before=before))
    for p in prunes:
        if p.fraction > s.max_prune:
            from fhe_lint.analysis.advice import bit_advice

            advice = bit_advice(p.layer, s.n_max).text(p.layer.layer.weight.bits, p.layer.layer.input.bits)
            return refuse(pruned, f"fixing {p.layer.name} would prune {p.fraction:.0%} of its weights "
                                  f"(more than --max-prune {s.max_prune:.0%}); lower its bit-widths instead: {advice}")
    graph = result.analysis.graph
    fixed, touched = apply(graph, prunes)
    after = lint_model(fixed, result.path, s, graph.data)
    if after.fails(s.strict):
        left = next(d for d in after.diagnostics if d.fails(s.strict))
        return refuse(pruned, f"the pruned model would still fail: {left.code} at {left.place or 'the model'}: "
                              f"{left.message}")
    if data is None:
        return FixOutcome(after, FixSummary(pruned, bits_before=before), fixed, touched)
    agreement, change = impact(graph, after.analysis.graph, data)
    drop = 100 * (1 - agreement)
    if s.max_agreement_drop is not None and drop > s.max_agreement_drop:
        return refuse(pruned, f"the fix changes {drop:.2f} % of predictions on the calibration data "
                              f"(more than --max-agreement-drop {s.max_agreement_drop:g} %)", agreement, change)
    return FixOutcome(after, FixSummary(pruned, None, None, before, agreement, change), fixed, touched)
