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
    return any(d.severity is Severity.ERROR or strict for d in diagnostics)


@dataclass(frozen=True)
class Diagnostic:
    """A finding about one model location: a node, optionally one neuron (output unit/channel).

    ``data`` carries the numbers behind the message (bits, limit, counts) so that machine
    consumers never have to parse ``message``.
    """

    code: str
    severity: Severity
    message: str
    node: str | None = None
    neuron: int | None = None
    fixable: bool = False
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
