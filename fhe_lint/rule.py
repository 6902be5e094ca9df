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
from collections.abc import Callable, Iterable, Sequence
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
    # one layer's per-neuron findings in one sentence (given the layer's neuron count, if known);
    # None: the rule yields at most one finding per node, whose message is already that sentence
    summarize: Callable[[Sequence[Diagnostic], int | None], str] | None = None

    def __post_init__(self) -> None:
        if not CODE_PATTERN.match(self.code):
            raise ValueError(f"rule code {self.code!r} does not match {CODE_PATTERN.pattern}")

    def diagnostic(self, message: str, node: str | None = None, neuron: int | None = None,
                   fix: Requirement | None = None, **data: Any) -> Diagnostic:
        if fix is not None and self.fix is FixAvailability.NONE:
            raise ValueError(f"{self.code} declares no fix but a diagnostic carries one")
        return Diagnostic(self.code, self.severity, message, node, neuron, fix, data)


def neurons_phrase(diagnostics: Sequence[Diagnostic], total: int | None, shown: int = 12) -> tuple[int, str, str]:
    """(4, "4 of 10 neurons", "neurons 2, 5-7, 9"): how many, then which, runs collapsed and the
    list cut after ``shown`` runs so that a 4,096-channel layer still reads in one line."""
    ks = sorted({d.neuron for d in diagnostics if d.neuron is not None})
    runs: list[str] = []
    start = prev = None
    for k in [*ks, None]:
        if start is not None and (k is None or k != prev + 1):
            runs.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if k is not None:
            start = k if start is None else start
            prev = k
    listed = ", ".join(runs[:shown]) + (f", ... ({len(runs) - shown} more runs)" if len(runs) > shown else "")
    count = f"{len(ks)} of {total}" if total is not None else str(len(ks))
    noun = "neuron" if len(ks) == 1 and total in (None, 1) else "neurons"
    return len(ks), f"{count} {noun}", f"{'neuron' if len(ks) == 1 else 'neurons'} {listed}"
