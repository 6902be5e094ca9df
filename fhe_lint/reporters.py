"""Emitters: turn per-file outcomes into text, a layer table, or the JSON report contract.

Emitters only format; they neither decide exit codes nor touch models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

from fhe_lint.analysis import LayerAnalysis
from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.fix import FixOutcome
from fhe_lint.linter import LintResult
from fhe_lint.settings import Settings

REPORT_VERSION = 1


@dataclass(frozen=True)
class FileReport:
    """One input file's outcome: a lint result, or the error that stopped its analysis."""

    path: Path
    result: LintResult | None = None
    error: str | None = None
    fix: FixOutcome | None = None
    written: Path | None = None


def _layer_json(la: LayerAnalysis) -> dict[str, Any]:
    layer, b = la.layer, la.bounds
    w, x = layer.weight, layer.input
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
    }


def _diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    return {
        "code": d.code,
        "severity": d.severity.value,
        "node": d.node,
        "neuron": d.neuron,
        "message": d.message,
        "fixable": d.fixable,
        **{k: v for k, v in d.data.items() if k not in ("code", "severity", "node", "neuron", "message")},
    }


def _file_json(r: FileReport, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(r.path), "n_max": settings.n_max, "multiplier": settings.multiplier}
    if r.result is None:
        return {**out, "layers": [], "diagnostics": [], "error": r.error}
    out["layers"] = [_layer_json(la) for la in r.result.analysis.layers]
    out["diagnostics"] = [_diagnostic_json(d) for d in r.result.diagnostics]
    if r.fix is not None:
        out["fix"] = {
            "pruned": r.fix.pruned,
            "written": str(r.written) if r.written else None,
            "refused": r.fix.refused,
        }
    return out


def summary(reports: list[FileReport]) -> dict[str, int]:
    results = [r.result for r in reports if r.result is not None]
    return {
        "files": len(reports),
        "errors": sum(res.count(Severity.ERROR) for res in results),
        "warnings": sum(res.count(Severity.WARNING) for res in results),
        "failed_to_analyse": sum(r.result is None for r in reports),
    }


def to_json(reports: list[FileReport], settings: Settings) -> str:
    return json.dumps(
        {"version": REPORT_VERSION, "files": [_file_json(r, settings) for r in reports], "summary": summary(reports)},
        indent=1,
    )


def _location(path: Path, d: Diagnostic) -> str:
    where = f"{path}:{d.node}" if d.node else str(path)
    return f"{where}[neuron {d.neuron}]" if d.neuron is not None else where


def diagnostic_lines(r: FileReport) -> list[str]:
    if r.result is None:
        return []
    return [f"{_location(r.path, d)}: {d.code} {d.message}" for d in r.result.diagnostics]


def fix_lines(r: FileReport) -> list[str]:
    if r.fix is None:
        return []
    f = r.fix
    if f.refused:
        return [f"{r.path}: fix refused, file left untouched: {f.refused}"]
    if not f.pruned:
        target = f", copied unchanged to {r.written}" if r.written and r.written != r.path else ""
        return [f"{r.path}: nothing to fix{target}"]
    detail = ", ".join(f"{node}: {n}" for node, n in f.pruned.items())
    return [f"{r.path}: fixed, pruned {sum(f.pruned.values())} weights ({detail}); wrote {r.written}"]


def layer_table(r: FileReport, n_max: int) -> str:
    rows = []
    for la in r.result.analysis.layers:
        j = _layer_json(la)
        bits = j["accumulator_bits"]
        rows.append([
            j["node"], j["op"], j["neurons"], j["fan_in"], f"{j['weight_bits']}/{j['input_bits']}",
            j["omega"], j["max_nonzero"],
            "unknown" if j["accumulator_range"] is None else f"[{j['accumulator_range'][0]}, {j['accumulator_range'][1]}]",
            bits, None if bits is None else n_max - bits,
        ])
    headers = ["node", "op", "neurons", "fan-in", "bits w/in", "Ω", "max nz", "range", "acc bits", "headroom"]
    return f"{r.path}\n" + tabulate(rows, headers=headers, missingval="-")


def summary_line(reports: list[FileReport]) -> str:
    s = summary(reports)
    files = f"{s['files']} file{'s' if s['files'] != 1 else ''}"
    failed = f", {s['failed_to_analyse']} could not be analysed" if s["failed_to_analyse"] else ""
    if not s["errors"] and not s["warnings"] and not s["failed_to_analyse"]:
        return f"All checks passed ({files})."
    return f"Found {s['errors']} error(s) and {s['warnings']} warning(s) in {files}{failed}."
