"""The whole fix of one model: edits from a strategy, applied on a copy, re-linted, then
accepted or refused (nothing is written here; the runner writes an accepted model atomically).

``plan`` chooses the taps L1 pruning removes; ``strategies`` compensate the kept weights or put
layers on coarser grids; ``apply`` builds the model from the edits. ``auto`` tries them all and
keeps the fitting model whose predictions agree most with the original on the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_lint.errors import FixError
from fhe_lint.fix import strategies
from fhe_lint.fix.apply import Fixed, apply, damage
from fhe_lint.fix.compensate import compare, first_output
from fhe_lint.fix.edits import LayerEdit
from fhe_lint.fix.plan import plan, requirements
from fhe_lint.linter import LintResult, lint_model
from fhe_lint.report.model import FixSummary, neuron_bits

@dataclass(frozen=True)
class FixOutcome:
    """What a fix did: the report's part of it (``summary``; the runner adds where it wrote), the
    lint of the model to report, and the fixed model to write (None when nothing is written)."""

    result: LintResult
    summary: FixSummary
    fixed: Fixed | None = None


@dataclass(frozen=True)
class _Candidate:
    strategy: str
    edits: list[LayerEdit]
    refused: str | None = None
    after: LintResult | None = None
    fixed: Fixed | None = None
    impact: tuple[float, float, float] | None = None  # agreement, max |change|, mean squared change

    def summary(self, before: dict) -> FixSummary:
        agreement, change = self.impact[:2] if self.impact else (None, None)
        return FixSummary({e.layer.name: e.pruned for e in self.edits}, self.refused, None, before,
                          agreement, change, self.strategy, {e.layer.name: e.as_json() for e in self.edits})


def _blocking(result: LintResult) -> str | None:
    """Why no pruning can make this model pass: a failing finding that carries no fix."""
    blocked = [d for d in result.diagnostics if d.fails(result.analysis.settings.strict) and d.fix is None]
    if not blocked:
        return None
    d = blocked[0]
    more = f" (and {len(blocked) - 1} more finding(s) no fix can resolve)" if len(blocked) > 1 else ""
    return f"pruning cannot fix {d.code} at {d.place or 'the model'}: {d.message}{more}"


def _advice(e: LayerEdit, n_max: int) -> str:
    from fhe_lint.analysis.advice import bit_advice

    la = e.layer
    return bit_advice(la, n_max).text(la.layer.weight.bits, la.layer.input.bits)


def _try(result: LintResult, strategy: str, edits: list[LayerEdit], data: np.ndarray | None,
         reference: np.ndarray | None) -> _Candidate:
    """One strategy's edits judged: refused past the caps, re-linted, and with data compared with
    the original model's ``reference`` output."""
    s, graph = result.analysis.settings, result.analysis.graph
    for e in edits:
        if 100 * e.fraction > s.max_prune:
            return _Candidate(strategy, edits, f"fixing {e.layer.name} would prune {e.fraction:.0%} of its weights "
                                               f"(more than --max-prune {s.max_prune:g} %); lower its bit-widths "
                                               f"instead: {_advice(e, s.n_max)}")
    if data is None:
        for e in edits:
            lost = 100 * damage(graph, e)
            if lost > s.max_damage:
                return _Candidate(strategy, edits, (
                    f"{strategy} would change {lost:.1f} % of {e.layer.name}'s weight energy (more than "
                    f"--max-damage {s.max_damage:g} %) with no data to measure what that costs; give "
                    f"--calibration DATA.npy to measure it and compensate, or lower its bit-widths: "
                    f"{_advice(e, s.n_max)}"))
    fixed = apply(graph, edits)
    after = lint_model(fixed.model, result.path, s, fixed.data, result.analysis.complaint)
    if after.fails(s.strict):
        left = next(d for d in after.diagnostics if d.fails(s.strict))
        return _Candidate(strategy, edits, f"the {strategy} fix would still fail: {left.code} at "
                                           f"{left.place or 'the model'}: {left.message}")
    measured = compare(reference, first_output(fixed.graph(), data)) if data is not None else None
    return _Candidate(strategy, edits, None, after, fixed, measured)


def _agreement(c: _Candidate) -> float:
    """Share of the calibration predictions the candidate keeps (no data: all alike)."""
    return c.impact[0] if c.impact else 0.0


def _better(c: _Candidate, best: _Candidate) -> bool:
    """More predictions kept. A tie keeps the strategy tried first (the one changing the model
    least), except between two roundings of the same strategy (plain, compensated): there the
    smaller output change on the data wins, which is what compensation aims at."""
    if _agreement(c) != _agreement(best):
        return _agreement(c) > _agreement(best)
    return c.strategy == best.strategy and c.impact is not None and best.impact is not None \
        and c.impact[2] < best.impact[2]


def fix_model(result: LintResult, data: np.ndarray | None = None) -> FixOutcome:
    s = result.analysis.settings
    before = neuron_bits(result)
    blocked = _blocking(result)
    if blocked is not None:
        return FixOutcome(result, FixSummary({}, blocked, None, before))
    strategy = s.fix_strategy or ("auto" if data is not None else "prune")
    if data is None and strategy in ("compensate", "auto"):
        raise FixError(f"--fix-strategy {strategy} needs --calibration data")
    activity = None
    if s.fix_order == "activation":
        if data is None:
            raise FixError("--fix-order activation needs --calibration data")
        from fhe_lint.analysis.calibration import tap_activity

        activity = tap_activity(result.analysis, data)
    wanted = requirements(result.diagnostics, s.strict)
    prunes = plan(result.analysis, result.diagnostics, activity)
    if not prunes:
        return FixOutcome(result, FixSummary({}, bits_before=before))
    # each strategy's candidates, the one changing the model least first: a tie keeps it. Fewer
    # bits are tried with plain rounding too (with data): on few samples compensation can overfit.
    makers = {
        "prune": lambda: [prunes],
        "compensate": lambda: [strategies.compensate(result.analysis, wanted, prunes, data)],
        "bits": lambda: [strategies.narrow(result.analysis, wanted, prunes, None)] + (
            [strategies.narrow(result.analysis, wanted, prunes, data)] if data is not None else []),
    }
    reference = first_output(result.analysis.graph, data) if data is not None else None
    # the best by _better; no candidate is held but the best so far (each holds a model's worth
    # of new weights)
    best: _Candidate | None = None
    refused: list[_Candidate] = []
    for name in makers if strategy == "auto" else [strategy]:
        for edits in makers[name]():
            c = _try(result, name, edits, data, reference)
            if c.refused is not None:
                refused.append(c)
            elif best is None or _better(c, best):
                best = c
    if best is None:
        return FixOutcome(result, (refused[0] if strategy != "auto" else refused[-1]).summary(before))
    if best.impact is not None and s.max_agreement_drop is not None:
        drop = 100 * (1 - best.impact[0])
        if drop > s.max_agreement_drop:
            return FixOutcome(result, _Candidate(best.strategy, best.edits, (
                f"the fix changes {drop:.2f} % of predictions on the calibration data (more than "
                f"--max-agreement-drop {s.max_agreement_drop:g} %)"), impact=best.impact).summary(before))
    return FixOutcome(best.after, best.summary(before), best.fixed)
