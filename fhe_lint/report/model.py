"""What one run produced per file, and the machine views of it every emitter shares."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhe_lint.analysis.advice import bit_advice
from fhe_lint.analysis.cost import LayerCost, model_cost
from fhe_lint.analysis.estimate import Estimate, model_estimate
from fhe_lint.analysis.rounding import LayerRounding, advised_bits, layer_rounding
from fhe_lint.analysis.accumulators import LayerAnalysis
from fhe_lint.bounds import int_bits
from fhe_lint.formats.quantizer import IntRange
from fhe_lint.diagnostics import Diagnostic, Severity, failing
from fhe_lint.linter import LintResult
from fhe_lint.settings import Settings

REPORT_VERSION = 1


@dataclass(frozen=True)
class FixSummary:
    """What a fix did to one file, as every output shows it."""

    pruned: dict[str, int]  # node -> weights pruned
    refused: str | None = None
    written: str | None = None
    bits_before: dict[str, tuple[int, ...]] | None = None  # per-neuron bits of the unfixed model
    agreement: float | None = None  # with calibration data: predictions unchanged by the fix
    max_abs_change: float | None = None
    strategy: str | None = None  # the strategy whose fix this is (or that was refused)
    layers: dict[str, dict] | None = None  # node -> what changed there (LayerEdit.as_json)


@dataclass(frozen=True)
class Advice:
    """The bit-widths at which a layer fits with no pruning at all (None: none does)."""

    max_weight_bits: int | None
    max_input_bits: int | None
    text: str


@dataclass(frozen=True)
class LayerReport:
    """One linear layer as every output shows it; ``None`` where unknown (FHE005) or meaningless
    (a weightless sum has no weight bits, Omega or fan-in of weights)."""

    node: str
    op: str
    neurons: int | None
    fan_in: int | None
    weight_bits: int | None
    input_bits: int | None
    input_range: tuple[int, int] | None
    omega: int | None
    max_nonzero: int | None
    accumulator_range: tuple[int, int] | None
    accumulator_bits: int | None
    runtime_accumulator_range: tuple[int, int] | None = None  # QDQ/QOperator's int32 accumulator
    observed_range: tuple[int, int] | None = None  # with --calibration
    observed_bits: int | None = None
    advice: Advice | None = None
    confirmed: bool = False  # --confirm ran on this file
    confirmed_bits: int | None = None  # what Concrete reported
    neuron_bits: tuple[int, ...] = ()  # per neuron, for plots (not in JSON)
    tlu_count: int | None = None  # table lookups its outputs take per inference (None: unknown)
    tlu_bits: int | None = None  # their width (None: no lookup)

    @classmethod
    def of(cls, la: LayerAnalysis, observed: IntRange | None = None, advise: bool = False,
           n_max: int = 16, cost: LayerCost | None = None) -> LayerReport:
        layer, b = la.layer, la.bounds
        w, x = layer.weight, layer.input
        advice = None
        if advise and b is not None and w is not None:
            a = bit_advice(la, n_max)
            advice = Advice(a.max_weight_bits, a.max_input_bits, a.text(w.bits, x.bits))
        return cls(
            node=la.name, op=layer.op,
            neurons=layer.neurons if w is not None else None,
            fan_in=layer.fan_in if w is not None else None,
            weight_bits=w.bits if w is not None else None,
            input_bits=x.bits if x is not None else None,
            input_range=(x.range.lo, x.range.hi) if x is not None else None,
            omega=b.omega if b is not None else None,
            max_nonzero=int(b.nonzero.max(initial=0)) if b is not None else None,
            accumulator_range=(b.range.lo, b.range.hi) if b is not None else None,
            accumulator_bits=int(b.bits.max(initial=1)) if b is not None else None,
            runtime_accumulator_range=(b.runtime.lo, b.runtime.hi) if b is not None and b.runtime else None,
            observed_range=(observed.lo, observed.hi) if observed is not None else None,
            observed_bits=int_bits(observed.lo, observed.hi) if observed is not None else None,
            advice=advice,
            neuron_bits=_bits(la),
            tlu_count=cost.tlu_count if cost is not None else None,
            tlu_bits=cost.tlu_bits if cost is not None else None,
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON contract's layer object (DESIGN.md): optional keys appear only when known."""
        def pair(r: tuple[int, int] | None) -> list[int] | None:
            return list(r) if r is not None else None

        out: dict[str, Any] = {
            "node": self.node, "op": self.op, "neurons": self.neurons, "fan_in": self.fan_in,
            "weight_bits": self.weight_bits, "input_bits": self.input_bits, "input_range": pair(self.input_range),
            "omega": self.omega, "max_nonzero": self.max_nonzero,
            "accumulator_range": pair(self.accumulator_range), "accumulator_bits": self.accumulator_bits,
            "tlu_count": self.tlu_count, "tlu_bits": self.tlu_bits,
        }
        if self.runtime_accumulator_range is not None:
            out["runtime_accumulator_range"] = pair(self.runtime_accumulator_range)
        if self.observed_range is not None:
            out["observed_range"], out["observed_bits"] = pair(self.observed_range), self.observed_bits
        if self.advice is not None:
            out["advice"] = {"max_weight_bits": self.advice.max_weight_bits,
                             "max_input_bits": self.advice.max_input_bits, "text": self.advice.text}
        if self.confirmed:
            out["confirmed_bits"] = self.confirmed_bits
        return out


@dataclass(frozen=True)
class FileReport:
    """One input file's outcome as plain data (cheap to send between processes for ``-j``):
    its layers, findings and fix, or the error that stopped its analysis."""

    path: Path
    settings: Settings
    layers: tuple[LayerReport, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    error: str | None = None
    fix: FixSummary | None = None
    suppressed: tuple[tuple[str, int], ...] = ()  # (source, findings it hid)
    confirm_network: dict[str, Any] | None = None  # NetworkResult.as_json()
    incomplete: str | None = None  # a step asked for that could not run (--confirm without Concrete)
    estimate: Estimate | None = None  # complexity, keys and seconds from Concrete's figures
    rounding: dict[str, LayerRounding] | None = None  # with calibration data: per layer, the free rounding
    rounded_estimate: Estimate | None = None  # the estimate at the advised rounding_threshold_bits

    @classmethod
    def of(cls, result: LintResult, fix: FixSummary | None = None,
           observed: dict[str, IntRange] | None = None) -> FileReport:
        s = result.analysis.settings
        failing = {d.node for d in result.diagnostics if d.code in ("FHE001", "FHE003")}
        observed = observed or {}
        widths = {name: int_bits(r.lo, r.hi) for name, r in observed.items()}
        costs = model_cost(result.analysis, s.rounding_bits, widths)
        layers = tuple(LayerReport.of(la, observed.get(la.name), la.name in failing, s.n_max, costs[la.name])
                       for la in result.analysis.layers)
        rounding = {name: layer_rounding(observed[name].lo, observed[name].hi, c.next_input_bits, c.next_level)
                    for name, c in costs.items() if c.lookups and name in observed and c.next_input_bits}
        advised = advised_bits(rounding)
        return cls(result.path, s, layers, result.diagnostics, fix=fix, suppressed=result.suppressed,
                   estimate=model_estimate(costs, s.rounding_bits), rounding=rounding or None,
                   rounded_estimate=model_estimate(costs, advised) if advised is not None else None)

    def fhe_cost(self) -> dict[str, Any]:
        """The model's bootstraps per inference (None if a layer's count is unknown), the widest
        lookup, the circuit's widest integer (every accumulator, the last layer's included) and
        the estimate, as the JSON's ``fhe_cost``."""
        counts = [layer.tlu_count for layer in self.layers]
        widths = [layer.tlu_bits for layer in self.layers if layer.tlu_bits is not None]
        circuit = [layer.observed_bits if layer.observed_bits is not None else layer.accumulator_bits
                   for layer in self.layers]
        known = [b for b in circuit if b is not None]
        return {"tlu_count": None if None in counts else sum(counts), "max_tlu_bits": max(widths, default=None),
                "max_bits": max(known) if known and len(known) == len(circuit) else None,
                "widths": "observed" if any(layer.observed_bits is not None for layer in self.layers) else "worst case",
                "rounding_bits": self.settings.rounding_bits,
                **({"estimate": self.estimate.as_json()} if self.estimate is not None else {}),
                **({"rounding_advice": self.rounding_advice()} if self.rounding else {})}

    def rounding_advice(self) -> dict[str, Any]:
        """The rounding_threshold_bits that moves each layer's output by at most a quarter level
        of the next quantizer on the calibration data, and the estimate with it."""
        assert self.rounding is not None
        return {"rounding_bits": advised_bits(self.rounding),
                "layers": {name: r.as_json() for name, r in self.rounding.items()},
                **({"estimate": self.rounded_estimate.as_json()} if self.rounded_estimate is not None else {})}

    def count(self, severity: Severity) -> int:
        return sum(d.severity is severity for d in self.diagnostics)

    def fails(self) -> bool:
        refused = self.fix is not None and self.fix.refused is not None
        return refused or failing(self.diagnostics, self.settings.strict)


def _bits(la: LayerAnalysis) -> tuple[int, ...]:
    """Each neuron's worst-case bits; none when the range is unknown."""
    return tuple(int(v) for v in la.bounds.bits) if la.bounds is not None else ()


def neuron_bits(result: LintResult) -> dict[str, tuple[int, ...]]:
    """Per analysable layer, its neurons' bits (a fix keeps them to draw the state before it)."""
    return {la.name: _bits(la) for la in result.analysis.layers if la.bounds is not None}


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
        "suppressed": sum(n for r in reports for _, n in r.suppressed),
    }

