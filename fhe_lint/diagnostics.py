"""The one record every rule produces and every emitter consumes."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    ERROR = "error"
    WARNING = "warning"


def failing(diagnostics: Iterable[Diagnostic], strict: bool) -> bool:
    """The exit-code rule: an error fails; with ``strict``, any finding does."""
    return any(d.fails(strict) for d in diagnostics)


@dataclass(frozen=True)
class Requirement:
    """What a fix must make hold at one neuron, with the rule's own limit.

    The rule that found the violation is the only judge of it: the fix plans from the
    requirements of the diagnostics that survived select, ignore and suppressions, and never
    re-derives which neurons violate.
    """

    accumulator_bits: int | None = None  # the exact worst case fits in this many bits
    nonzero: int | None = None  # at most this many non-zero weights

    def merge(self, other: Requirement) -> Requirement:
        """Both requirements at once (two rules on one neuron)."""
        def tighter(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return Requirement(tighter(self.accumulator_bits, other.accumulator_bits), tighter(self.nonzero, other.nonzero))


@dataclass(frozen=True)
class Diagnostic:
    """A finding about one model location: a node, optionally one neuron (output unit/channel).

    ``data`` carries the numbers behind the message (bits, limit, counts) so that machine
    consumers never have to parse ``message``. ``fix`` is what a fix must achieve, or None when
    no fix can (the message then says why).
    """

    code: str
    severity: Severity
    message: str
    node: str | None = None
    neuron: int | None = None
    fix: Requirement | None = None
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def fixable(self) -> bool:
        return self.fix is not None

    @property
    def place(self) -> str | None:
        """``node[neuron N]`` (or just the node), as every message names a finding's location."""
        if self.node is None:
            return None
        return f"{self.node}[neuron {self.neuron}]" if self.neuron is not None else self.node

    def fails(self, strict: bool) -> bool:
        return self.severity is Severity.ERROR or strict
