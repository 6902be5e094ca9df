"""What a rule is: a code, a name, a severity, its fix availability, its docs and a pure check.

Rules read a :class:`~fhe_lint.analysis.accumulators.ModelAnalysis` and yield diagnostics; they never print,
write, or change the model. The rule's documentation is its module docstring, so that
``fhe-lint rule CODE`` cannot drift from the code. A rule module imports neither onnx nor numpy
(the analysis it reads answers in plain Python), so asking about a rule, or parsing rule codes,
is instant.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhe_lint.diagnostics import Diagnostic, Requirement, Severity

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis

CODE_PATTERN = re.compile(r"^FHE\d{3}$")
DOC_SECTIONS = ("What it does", "Why it matters", "Example", "Fix")


class FixAvailability(str, enum.Enum):
    ALWAYS = "always"
    SOMETIMES = "sometimes"
    NONE = "none"


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: Severity
    fix: FixAvailability
    summary: str
    doc: str
    check: Callable[[ModelAnalysis], Iterable[Diagnostic]]

    def __post_init__(self) -> None:
        if not CODE_PATTERN.match(self.code):
            raise ValueError(f"rule code {self.code!r} does not match {CODE_PATTERN.pattern}")

    def diagnostic(self, message: str, node: str | None = None, neuron: int | None = None,
                   fix: Requirement | None = None, **data: Any) -> Diagnostic:
        if fix is not None and self.fix is FixAvailability.NONE:
            raise ValueError(f"{self.code} declares no fix but a diagnostic carries one")
        return Diagnostic(self.code, self.severity, message, node, neuron, fix, data)
