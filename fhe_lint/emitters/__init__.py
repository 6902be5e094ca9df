"""Output formats behind one interface: ``emit(reports, **options) -> str``.

Emitters only format; they neither decide exit codes nor touch models.
"""

from __future__ import annotations

from collections.abc import Callable

from fhe_lint.emitters import github, json_report, junit, sarif, text

EMITTERS: dict[str, Callable[..., str]] = {
    "text": text.emit,
    "json": json_report.emit,
    "sarif": sarif.emit,
    "github": github.emit,
    "junit": junit.emit,
}
