"""One fixture per rule code (as ruff keeps one per rule), shipped in the repository, with the
findings its builder computed from first principles: every code is exercised in a fresh clone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import lint_json

from fhe_lint.rules import RULES

HERE = Path(__file__).resolve().parent / "fixtures" / "rules"
EXPECTED = json.loads((HERE / "expected.json").read_text())


def test_every_rule_has_a_fixture():
    assert set(EXPECTED) == set(RULES)


@pytest.mark.parametrize("code", sorted(EXPECTED))
def test_rule_fixture(code):
    _, rep = lint_json(HERE / f"{code}.onnx", "--select", code)
    found = rep["files"][0]["diagnostics"]
    assert [{k: d[k] for k in want} for d, want in zip(found, EXPECTED[code])] == EXPECTED[code]
    assert len(found) == len(EXPECTED[code])
