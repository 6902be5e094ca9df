"""Every output format, produced for a fixture and parsed back with an independent parser."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, run_cli
from fhe_lint.rules import RULES

OVERFLOW = FIXTURES / "mlp_w6a6_unsigned_in.onnx"
CLEAN = FIXTURES / "mlp_w2a2.onnx"


def test_sarif_is_schema_valid_and_complete():
    sarif_model = pytest.importorskip("pydantic_sarif.model")
    p = run_cli(OVERFLOW, CLEAN, "--format", "sarif")
    assert p.returncode == 1
    log = json.loads(p.stdout)
    sarif_model.StaticAnalysisResultsFormatSarifVersion210JsonSchema.model_validate(log)  # SARIF 2.1.0 schema
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == sorted(RULES)
    assert all(r["shortDescription"]["text"] and r["fullDescription"]["text"] and r["help"]["text"] for r in rules)
    assert {r["defaultConfiguration"]["level"] for r in rules} == {"error", "warning"}
    results = [r for r in run["results"] if r["ruleId"] == "FHE001"]
    assert len(results) == 4 and all(r["level"] == "error" for r in results)
    loc = results[0]["locations"][0]
    assert loc["physicalLocation"]["artifactLocation"]["uri"].endswith("mlp_w6a6_unsigned_in.onnx")
    assert loc["logicalLocations"][1]["fullyQualifiedName"].startswith("/seq/seq.3/Gemm[neuron ")
    assert "--fix" in results[0]["message"]["text"] and results[0]["properties"]["fixable"]


def test_junit_parses_with_a_junit_parser(tmp_path):
    junitparser = pytest.importorskip("junitparser")
    out = tmp_path / "report.xml"
    p = run_cli(OVERFLOW, CLEAN, "--format", "junit", "--output-file", out)
    assert p.returncode == 1 and p.stdout == ""
    xml = junitparser.JUnitXml.fromfile(str(out))
    suites = {s.name: s for s in xml}
    bad, good = suites[str(OVERFLOW)], suites[str(CLEAN)]
    assert (bad.tests, bad.failures, good.tests, good.failures) == (2, 1, 2, 0)
    failed = [c for c in bad if c.result]
    assert [c.name for c in failed] == ["/seq/seq.3/Gemm"] and failed[0].result[0].type == "FHE001"


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github", "junit"])
def test_output_file_for_every_format(fmt, tmp_path):
    out = tmp_path / f"report.{fmt}"
    p = run_cli(CLEAN, "--format", fmt, "--output-file", out)
    assert p.returncode == 0 and p.stdout == "" and out.stat().st_size > 0


def test_parallel_jobs_give_the_same_report():
    files = sorted(FIXTURES.glob("*.onnx"))
    serial = run_cli(*files, "--format", "json")
    parallel = run_cli(*files, "--format", "json", "-j", "2")
    assert serial.returncode == parallel.returncode == 1
    assert json.loads(serial.stdout) == json.loads(parallel.stdout)
