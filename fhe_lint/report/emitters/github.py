"""GitHub Actions workflow commands: each finding becomes an annotation on the model file."""

from __future__ import annotations

from fhe_lint.report.model import FileReport, location


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def emit(reports: list[FileReport], **_: object) -> str:
    lines = []
    for r in reports:
        if r.error is not None:
            lines.append(f"::error file={_escape_property(str(r.path))},title=fhe-lint::{_escape_data(r.error)}")
            continue
        for d in r.diagnostics:
            level = "error" if d.severity.value == "error" else "warning"
            props = f"file={_escape_property(str(r.path))},title={_escape_property(d.code)}"
            lines.append(f"::{level} {props}::{_escape_data(location(r.path, d) + ': ' + d.message)}")
    return "\n".join(lines)
