"""Run the enabled rules over one model: the seam between loading, analysis and reporting."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from fhe_lint.analysis import ModelAnalysis, analyse
from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.graph import Graph
from fhe_lint.model_io import read_model
from fhe_lint.rules import RULES
from fhe_lint.settings import Settings


@dataclass(frozen=True)
class LintResult:
    analysis: ModelAnalysis
    diagnostics: tuple[Diagnostic, ...]
    fix_summary: dict[str, int] = field(default_factory=dict)  # node -> weights pruned

    @property
    def path(self) -> Path:
        return self.analysis.path

    def count(self, severity: Severity) -> int:
        return sum(d.severity is severity for d in self.diagnostics)

    def fails(self, strict: bool) -> bool:
        return any(d.severity is Severity.ERROR or strict for d in self.diagnostics)


def lint_model(model: onnx.ModelProto, path: Path, settings: Settings) -> LintResult:
    analysis = analyse(path, Graph(model), settings)
    diagnostics = tuple(
        d for code, rule in RULES.items() if settings.enabled(code) for d in rule.check(analysis)
    )
    return LintResult(analysis, diagnostics)


def lint_path(path: Path, settings: Settings) -> LintResult:
    return lint_model(read_model(path), path, settings)
