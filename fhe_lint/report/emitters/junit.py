"""JUnit XML for CI dashboards: a test suite per model, a test case per layer; an error finding
fails its layer's case, a warning is reported in the case's output."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fhe_lint.diagnostics import Severity
from fhe_lint.report.findings import findings
from fhe_lint.report.model import FileReport


def _suite(r: FileReport) -> ET.Element:
    suite = ET.Element("testsuite", name=str(r.path))
    if r.error is not None:
        case = ET.SubElement(suite, "testcase", classname=str(r.path), name="load")
        ET.SubElement(case, "error", message=r.error or "", type="fhe-lint")
        suite.set("tests", "1"), suite.set("errors", "1"), suite.set("failures", "0")
        return suite
    by_node: dict[str | None, list] = {}
    for f in findings(r, per_neuron=True):
        by_node.setdefault(f.node, []).append(f)
    names = [layer.node for layer in r.layers]
    names += [n for n in by_node if n not in names]
    failures = 0
    for name in names:
        case = ET.SubElement(suite, "testcase", classname=str(r.path), name=name or "model")
        found = by_node.get(name, [])
        errors = [d for d in found if d.severity is Severity.ERROR]
        if errors:
            failures += 1
            failure = ET.SubElement(case, "failure", message=f"{len(errors)} error(s): {errors[0].code} {errors[0].message}",
                                    type=errors[0].code)
            failure.text = "\n".join(f.line() for f in errors)
        warnings = [d for d in found if d.severity is Severity.WARNING]
        if warnings:
            ET.SubElement(case, "system-out").text = "\n".join(f.line() for f in warnings)
    suite.set("tests", str(len(names))), suite.set("failures", str(failures)), suite.set("errors", "0")
    return suite


def emit(reports: list[FileReport], **_: object) -> str:
    root = ET.Element("testsuites", name="fhe-lint")
    for r in reports:
        root.append(_suite(r))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
