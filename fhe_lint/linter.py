"""Run the enabled rules over one model: the seam between loading, analysis and reporting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from fhe_lint.analysis.accumulators import ModelAnalysis, analyse
from fhe_lint.config import model_suppressions
from fhe_lint.diagnostics import Diagnostic, failing
from fhe_lint.formats.graph import Graph
from fhe_lint.io.model_io import read_model
from fhe_lint.io.onnx_proto import ModelProto
from fhe_lint.rules import RULES
from fhe_lint.settings import Settings, suppresses
from fhe_lint.io.tensor_data import TensorData


@dataclass(frozen=True)
class LintResult:
    analysis: ModelAnalysis
    diagnostics: tuple[Diagnostic, ...]
    suppressed: tuple[tuple[str, int], ...] = ()  # (source, findings it hid): "config", "model metadata"

    @property
    def path(self) -> Path:
        return self.analysis.path

    def fails(self, strict: bool) -> bool:
        return failing(self.diagnostics, strict)


def lint_model(model: ModelProto, path: Path, settings: Settings, data: TensorData | None = None,
               complaint: str | None = None) -> LintResult:
    """The findings that survive select/ignore and suppressions, and how many each source hid: a
    suppression is never silent, least of all one that travels inside a binary model file."""
    in_model = model_suppressions(model) if settings.model_suppressions else ()
    analysis = analyse(path, Graph(model, data), settings, complaint)
    found = [d for code, rule in RULES.items() if settings.enabled(code) for d in rule.check(analysis)]
    verdict = ["config" if settings.ignored(d.code, d.node) else
               "model metadata" if suppresses(in_model, d.code, d.node) else None for d in found]
    kept = tuple(d for d, hidden_by in zip(found, verdict) if hidden_by is None)
    hidden = tuple((source, verdict.count(source)) for source in ("config", "model metadata") if source in verdict)
    return LintResult(analysis, kept, suppressed=hidden)


def lint_path(path: Path, settings: Settings) -> LintResult:
    loaded = read_model(path)
    return lint_model(loaded.model, path, settings, loaded.data, loaded.complaint)
