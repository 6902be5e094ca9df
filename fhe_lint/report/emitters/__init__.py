"""Output formats behind one interface: ``emit(reports, **options) -> str``.

Emitters only format; they neither decide exit codes nor touch models. Each is imported only
when chosen, to keep a pre-commit run's start-up small.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

FORMATS: dict[str, str] = {
    "text": "text",
    "json": "json_report",
    "sarif": "sarif",
    "github": "github",
    "junit": "junit",
}


def emitter(name: str) -> Callable[..., str]:
    return importlib.import_module(f"fhe_lint.report.emitters.{FORMATS[name]}").emit
