"""What one run produced per file, and the machine views of it every emitter shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhe_lint.advice import bit_advice
from fhe_lint.analysis import LayerAnalysis
from fhe_lint.bounds import int_bits
from fhe_lint.quantizers import IntRange
from fhe_lint.diagnostics import Diagnostic, Severity, failing
from fhe_lint.linter import LintResult
from fhe_lint.settings import Settings

REPORT_VERSION = 1


@dataclass(frozen=True)
class FixSummary:
    pruned: dict[str, int]  # node -> weights pruned
    refused: str | None = None
    written: str | None = None
    bits_before: dict[str, tuple[int, ...]] | None = None  # per-neuron bits of the unfixed model
    agreement: float | None = None  # with calibration data: predictions unchanged by the fix
    max_abs_change: float | None = None


@dataclass(frozen=True)
class FileReport:
    """One input file's outcome as plain data (cheap to send between processes for ``-j``):
    its layers (JSON view), findings and fix, or the error that stopped its analysis."""

    path: Path
    settings: Settings
    layers: tuple[dict[str, Any], ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    error: str | None = None
    fix: FixSummary | None = None
    suppressed: int = 0
    neuron_bits: dict[str, tuple[int, ...]] = field(default_factory=dict)  # for plots, not in JSON
    confirm_network: dict[str, Any] | None = None  # {compiles, max_bitwidth, error}

    @classmethod
    def of(cls, result: LintResult, fix: FixSummary | None = None, observed: dict[str, IntRange] | None = None,
           confirmed: dict[str, int] | None = None, network: dict[str, Any] | None = None) -> FileReport:
        s = result.analysis.settings
        failing = {d.node for d in result.diagnostics if d.code in ("FHE001", "FHE003")}
        layers = []
        for la in result.analysis.layers:
            j = layer_json(la, (observed or {}).get(la.name), la.name in failing, s.n_max)
            if confirmed is not None:
                j["confirmed_bits"] = confirmed.get(la.name)
            layers.append(j)
        return cls(result.path, s, tuple(layers), result.diagnostics, fix=fix, suppressed=result.suppressed,
                   neuron_bits=neuron_bits(result), confirm_network=network)

    def count(self, severity: Severity) -> int:
        return sum(d.severity is severity for d in self.diagnostics)

    def fails(self) -> bool:
        refused = self.fix is not None and self.fix.refused is not None
        return refused or failing(self.diagnostics, self.settings.strict)


def neuron_bits(result: LintResult) -> dict[str, tuple[int, ...]]:
    return {la.name: tuple(int(b) for b in la.bounds.bits) for la in result.analysis.layers if la.bounds is not None}


def layer_json(la: LayerAnalysis, observed: IntRange | None = None, advise: bool = False,
               n_max: int = 16) -> dict[str, Any]:
    layer, b = la.layer, la.bounds
    w, x = layer.weight, layer.input
    extra: dict[str, Any] = {}
    if observed is not None:
        extra["observed_range"] = [observed.lo, observed.hi]
        extra["observed_bits"] = int_bits(observed.lo, observed.hi)
    if advise and b is not None and w is not None:
        a = bit_advice(la, n_max)
        extra["advice"] = {"max_weight_bits": a.max_weight_bits, "max_input_bits": a.max_input_bits,
                           "text": a.text(w.bits, x.bits)}
    return {
        "node": la.name,
        "op": layer.op,
        "neurons": layer.neurons if w is not None else None,
        "fan_in": layer.fan_in if w is not None else None,
        "weight_bits": w.bits if w is not None else None,  # None: unknown, or a weightless sum
        "input_bits": x.bits if x is not None else None,
        "input_range": [x.range.lo, x.range.hi] if x is not None else None,
        "omega": b.omega if b is not None else None,
        "max_nonzero": int(b.nonzero.max(initial=0)) if b is not None else None,
        "accumulator_range": [b.range.lo, b.range.hi] if b is not None else None,
        "accumulator_bits": int(b.bits.max(initial=1)) if b is not None else None,
        **({"runtime_accumulator_range": [b.runtime.lo, b.runtime.hi]} if b is not None and b.runtime else {}),
        **extra,
    }


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    return {
        "code": d.code,
        "severity": d.severity.value,
        "node": d.node,
        "neuron": d.neuron,
        "message": d.message,
        "fixable": d.fixable,
        **{k: v for k, v in d.data.items() if k not in ("code", "severity", "node", "neuron", "message")},
    }


def summary(reports: list[FileReport]) -> dict[str, int]:
    return {
        "files": len(reports),
        "errors": sum(r.count(Severity.ERROR) for r in reports),
        "warnings": sum(r.count(Severity.WARNING) for r in reports),
        "failed_to_analyse": sum(r.error is not None for r in reports),
        "suppressed": sum(r.suppressed for r in reports),
    }


def location(path: Path, d: Diagnostic) -> str:
    """``path:node[neuron N]``: grep-able, and the same in every human-readable format."""
    where = f"{path}:{d.node}" if d.node else str(path)
    return f"{where}[neuron {d.neuron}]" if d.neuron is not None else where
