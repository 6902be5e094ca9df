"""The versioned JSON report (DESIGN.md contract): keys may be added, never renamed."""

from __future__ import annotations

import json
from typing import Any

from fhe_lint.report.model import REPORT_VERSION, FileReport, diagnostic_json, summary


def _file_json(r: FileReport) -> dict[str, Any]:
    out: dict[str, Any] = {"path": str(r.path), "n_max": r.settings.n_max, "multiplier": r.settings.multiplier,
                           "layers": [layer.as_json() for layer in r.layers],
                           "diagnostics": [diagnostic_json(d) for d in r.diagnostics]}
    if r.error is None:
        out["fhe_cost"] = r.fhe_cost()
    if r.suppressed:
        out["suppressed"] = dict(r.suppressed)
    if r.error is not None:
        out["error"] = r.error
    if r.incomplete is not None:
        out["incomplete"] = r.incomplete
    if r.confirm_network is not None:
        out["confirm_network"] = r.confirm_network
    if r.fix is not None:
        out["fix"] = {"pruned": r.fix.pruned, "written": r.fix.written, "refused": r.fix.refused,
                      "agreement": r.fix.agreement, "max_abs_change": r.fix.max_abs_change,
                      "strategy": r.fix.strategy, "layers": r.fix.layers or {}}
    return out


def emit(reports: list[FileReport], **_: object) -> str:
    return json.dumps(
        {"version": REPORT_VERSION, "files": [_file_json(r) for r in reports], "summary": summary(reports)},
        indent=1,
    )
