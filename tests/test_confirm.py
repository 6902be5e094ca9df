"""--confirm: Concrete itself compiles each layer's multi-sum and must agree with the static bits.

concrete-python needs numpy < 2, so it lives in its own virtual environment: the tests run the CLI
with the interpreter named by FHE_LINT_CONCRETE_PYTHON (.ci/run creates it), or with this one when
the extra is installed here; they skip when neither has it.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest
from conftest import FIXTURES, THIRDPARTY
from conftest import lint_json as _lint_json
from conftest import run_cli as _run_cli

PYTHON = os.environ.get("FHE_LINT_CONCRETE_PYTHON", sys.executable)
HAS_CONCRETE = subprocess.run([PYTHON, "-c", "import concrete.fhe"], capture_output=True).returncode == 0
lint_json = functools.partial(_lint_json, python=PYTHON)
run_cli = functools.partial(_run_cli, python=PYTHON)
needs_concrete = pytest.mark.skipif(not HAS_CONCRETE, reason="concrete-python (fhe-lint[concrete]) not installed")
NAMES = sorted(json.loads((FIXTURES / "truth.json").read_text()))


@needs_concrete
@pytest.mark.parametrize("name", NAMES)
def test_concrete_agrees_with_the_static_bits(name):
    rc, rep = lint_json(FIXTURES / f"{name}.onnx", "--confirm")
    layers = rep["files"][0]["layers"]
    assert layers and all(layer["confirmed_bits"] == layer["accumulator_bits"] for layer in layers)
    if name.endswith("overflow") or name == "mlp_w6a6_unsigned_in":
        assert rc == 1 and max(layer["confirmed_bits"] for layer in layers) > 16  # the overflow, confirmed


@needs_concrete
@pytest.mark.skipif(not (THIRDPARTY / "truth.json").exists(), reason="../shared/thirdparty absent")
def test_concrete_agrees_on_thirdparty_models():
    for model in ("TFC_2W2A.onnx", "espcn_subpixel_quant.onnx"):
        _, rep = lint_json(THIRDPARTY / model, "--confirm")
        for layer in rep["files"][0]["layers"]:
            assert layer["confirmed_bits"] == layer["accumulator_bits"], (model, layer["node"])


@needs_concrete
def test_confirm_after_fix_checks_the_fixed_model(tmp_path):
    rc, rep = lint_json(FIXTURES / "mlp_w6a6_unsigned_in.onnx", "--fix", "-o", tmp_path / "f.onnx", "--confirm",
                        "--select", "FHE001")
    assert rc == 0 and all(layer["confirmed_bits"] <= 16 for layer in rep["files"][0]["layers"])


@pytest.mark.skipif(HAS_CONCRETE, reason="only meaningful without the extra")
def test_confirm_without_the_extra_is_a_one_line_hint_and_keeps_the_static_findings():
    p = run_cli(FIXTURES / "mlp_w2a2.onnx", "--confirm")
    assert p.returncode == 2 and 'pip install "concrete-python' in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1
    rc, rep = lint_json(FIXTURES / "mlp_w6a6_unsigned_in.onnx", "--confirm")
    f = rep["files"][0]
    assert rc == 2 and "error" not in f and "concrete-python" in f["incomplete"]
    assert sum(d["code"] == "FHE001" for d in f["diagnostics"]) == 4 and f["layers"]
