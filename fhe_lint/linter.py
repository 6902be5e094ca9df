"""Run the enabled rules over one model: the seam between loading, analysis and reporting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from fhe_lint.analysis.accumulators import ModelAnalysis, analyse
from fhe_lint.config import with_model_suppressions
from fhe_lint.diagnostics import Diagnostic, failing
from fhe_lint.formats.graph import Graph
from fhe_lint.io.model_io import read_model
from fhe_lint.io.onnx_proto import ModelProto
from fhe_lint.rules import RULES
from fhe_lint.settings import Settings
from fhe_lint.io.tensor_data import TensorData


@dataclass(frozen=True)
class LintResult:
    analysis: ModelAnalysis
    diagnostics: tuple[Diagnostic, ...]
    suppressed: int = 0

    @property
    def path(self) -> Path:
        return self.analysis.path

    def fails(self, strict: bool) -> bool:
        return failing(self.diagnostics, strict)


def lint_model(model: ModelProto, path: Path, settings: Settings, data: TensorData | None = None) -> LintResult:
    settings = with_model_suppressions(settings, model)
    analysis = analyse(path, Graph(model, data), settings)
    found = [d for code, rule in RULES.items() if settings.enabled(code) for d in rule.check(analysis)]
    kept = tuple(d for d in found if not settings.ignored(d.code, d.node))
    return LintResult(analysis, kept, suppressed=len(found) - len(kept))


def lint_path(path: Path, settings: Settings) -> LintResult:
    model, data = read_model(path)
    return lint_model(model, path, settings, data)
