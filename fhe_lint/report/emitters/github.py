"""GitHub Actions workflow commands: each finding becomes an annotation on the model file.

GitHub shows at most 10 error and 10 warning annotations per step and drops the rest, so the
findings are grouped per layer and rule, the most severe go first, and a notice counts what did
not fit (the job log and SARIF keep everything).
"""

from __future__ import annotations

from fhe_lint.report.findings import findings, most_severe_first
from fhe_lint.report.model import FileReport

SHOWN_PER_LEVEL = 10


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _command(level: str, path: str, title: str, message: str) -> str:
    return f"::{level} file={_escape_property(path)},title={_escape_property(title)}::{_escape_data(message)}"


def emit(reports: list[FileReport], *, per_neuron: bool = False, **_: object) -> str:
    unreadable = [_command("error", str(r.path), "fhe-lint", r.error) for r in reports if r.error is not None]
    ranked = most_severe_first(f for r in reports for f in findings(r, per_neuron))
    lines, shown = [], {"error": len(unreadable), "warning": 0}
    left = 0
    for f in ranked:
        level = f.severity.value
        if shown[level] >= SHOWN_PER_LEVEL:
            left += 1
            continue
        shown[level] += 1
        lines.append(_command(level, str(f.path), f.code, f"{f.location}: {f.message}"))
    lines = unreadable[:SHOWN_PER_LEVEL] + lines
    left += max(0, len(unreadable) - SHOWN_PER_LEVEL)
    if left:
        lines.append(f"::notice title=fhe-lint::{left} more finding(s) not annotated (GitHub shows "
                     f"{SHOWN_PER_LEVEL} errors and {SHOWN_PER_LEVEL} warnings per step); see the job log or SARIF")
    return "\n".join(lines)
