"""SARIF 2.1.0 for GitHub code scanning: every rule in tool.driver, a result per finding located
in the model file, with the node and neuron as logical locations.

A model is binary, so a result's region is the file's first line, and GitHub cannot derive a
fingerprint from the file's text: each result carries its own, a hash of (path, rule, node,
neuron), so an alert keeps its identity across commits while the weights change."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fhe_lint import __version__
from fhe_lint.diagnostics import Diagnostic
from fhe_lint.report.model import FileReport
from fhe_lint.rule import Rule
from fhe_lint.rules import RULES

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
FIX_TEXT = "fhe-lint MODEL --fix prunes the smallest-magnitude weights of each violating neuron."


def _section(doc: str, title: str) -> str:
    body = doc.split(f"## {title}", 1)[1] if f"## {title}" in doc else ""
    return body.split("\n## ", 1)[0].strip()


def _rule(rule: Rule) -> dict[str, Any]:
    doc = rule.doc.split("\n", 1)[1].strip()
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": _section(doc, "What it does")},
        "help": {"text": doc, "markdown": doc},
        "defaultConfiguration": {"level": rule.severity.value},
        "properties": {"fix": rule.fix.value},
    }


def fingerprint(path: str, d: Diagnostic) -> str:
    return hashlib.sha256("\0".join([path, d.code, d.node or "", str(d.neuron)]).encode()).hexdigest()[:32]


def _result(path: str, d: Diagnostic, index: dict[str, int]) -> dict[str, Any]:
    logical = [{"name": d.node, "kind": "module", "fullyQualifiedName": d.node}] if d.node else []
    if d.node and d.neuron is not None:
        logical.append({"name": f"neuron {d.neuron}", "kind": "member",
                        "fullyQualifiedName": f"{d.node}[neuron {d.neuron}]"})
    result: dict[str, Any] = {
        "ruleId": d.code,
        "ruleIndex": index[d.code],
        "level": d.severity.value,
        "message": {"text": d.message + (f". Fix: {FIX_TEXT}" if d.fixable else "")},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": path}, "region": {"startLine": 1}},
                       "logicalLocations": logical}],
        "partialFingerprints": {"primaryLocationLineHash": fingerprint(path, d)},
        "properties": {"fixable": d.fixable, **{k: v for k, v in d.data.items() if _plain(v)}},
    }
    return result


def _plain(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False


def emit(reports: list[FileReport], **_: object) -> str:
    rules = list(RULES.values())
    index = {r.code: i for i, r in enumerate(rules)}
    results = [
        _result(r.path.as_posix(), d, index)
        for r in reports for d in r.diagnostics
    ]
    notifications = [
        {"level": "error", "message": {"text": r.error},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": r.path.as_posix()}}}]}
        for r in reports if r.error is not None
    ]
    run = {
        "tool": {"driver": {"name": "fhe-lint", "version": __version__, "semanticVersion": __version__,
                            "informationUri": "https://github.com/fhe-lint/fhe-lint",
                            "rules": [_rule(r) for r in rules]}},
        "artifacts": [{"location": {"uri": r.path.as_posix()}} for r in reports],
        "invocations": [{"executionSuccessful": not notifications,
                         "toolExecutionNotifications": notifications,
                         }],
        "results": results,
    }
    return json.dumps({"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}, indent=1)
