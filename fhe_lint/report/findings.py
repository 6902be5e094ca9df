"""Findings as people read them: one per rule and layer, the per-neuron diagnostics behind it.

A 6-bit layer can violate a budget in all its 4,096 neurons; a line per neuron buries the one
overflow that matters and overruns GitHub's ten annotations per step. Text and GitHub output
therefore group; JSON, SARIF and JUnit keep every neuron, and ``--per-neuron`` brings that back
to the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.report.model import FileReport
from fhe_lint.rules import RULES


@dataclass(frozen=True)
class Finding:
    path: Path
    code: str
    severity: Severity
    node: str | None
    neuron: int | None  # set only for a per-neuron finding
    message: str
    diagnostics: tuple[Diagnostic, ...]

    @property
    def location(self) -> str:
        """``path:node[neuron N]``: grep-able, the same in every human-readable format."""
        place = self.diagnostics[0].place if self.neuron is not None else self.node
        return str(self.path) if place is None else f"{self.path}:{place}"

    def line(self) -> str:
        return f"{self.location}: {self.code} {self.message}"

    def rank(self) -> tuple[int, int, int]:
        """Sort key, most severe first: errors, then how far past its limit, then how many neurons."""
        excess = max((_excess(d) for d in self.diagnostics), default=0)
        return (self.severity is not Severity.ERROR, -excess, -len(self.diagnostics))


def _excess(d: Diagnostic) -> int:
    """How far a finding is past its own limit, in the rule's unit (bits, non-zero weights)."""
    measured = d.data.get("bits", d.data.get("nonzero"))
    return int(measured) - int(d.data["limit"]) if measured is not None and "limit" in d.data else 0


def findings(r: FileReport, per_neuron: bool = False) -> list[Finding]:
    """The file's findings in rule order, grouped per (rule, node) unless ``per_neuron``."""
    def single(d: Diagnostic) -> Finding:
        return Finding(r.path, d.code, d.severity, d.node, d.neuron, d.message, (d,))

    if per_neuron:
        return [single(d) for d in r.diagnostics]
    groups: dict[tuple[str, str | None], list[Diagnostic]] = {}
    for d in r.diagnostics:
        groups.setdefault((d.code, d.node), []).append(d)
    neurons = {layer.node: layer.neurons for layer in r.layers}
    out = []
    for (code, node), found in groups.items():
        summarize = RULES[code].summarize
        if summarize is None or all(d.neuron is None for d in found):
            out += [single(d) for d in found]  # already one sentence per node
        else:
            out.append(Finding(r.path, code, found[0].severity, node, None, summarize(found, neurons.get(node or "")),
                               tuple(found)))
    return out


def most_severe_first(found: Iterable[Finding]) -> list[Finding]:
    return sorted(found, key=Finding.rank)
