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


@needs_concrete
def test_confirm_leaves_nothing_in_the_temporary_directory(tmp_path, monkeypatch):
    """Concrete writes each compiled circuit to a directory of its own under the temporary
    directory and never removes it; --confirm compiles one per layer and leaves none."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    p = run_cli(FIXTURES / "mlp_w6a6_unsigned_in.onnx", "--confirm", "--format", "json", subprocess_=True)
    assert p.returncode == 1 and json.loads(p.stdout)["files"][0]["layers"][0]["confirmed_bits"], p.stderr
    assert list(scratch.iterdir()) == []


@pytest.mark.skipif(HAS_CONCRETE, reason="only meaningful without the extra")
def test_confirm_without_the_extra_is_a_one_line_hint_and_keeps_the_static_findings():
    p = run_cli(FIXTURES / "mlp_w2a2.onnx", "--confirm")
    assert p.returncode == 2 and 'pip install "concrete-python' in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1
    rc, rep = lint_json(FIXTURES / "mlp_w6a6_unsigned_in.onnx", "--confirm")
    f = rep["files"][0]
    assert rc == 2 and "error" not in f and "concrete-python" in f["incomplete"]
    assert sum(d["code"] == "FHE001" for d in f["diagnostics"]) == 4 and f["layers"]


@needs_concrete
def test_the_shipped_cost_table_is_what_this_concrete_computes():
    """A few table points recompiled by the installed concrete-python: equal when it is the
    release the table was made with, and a timed run gives a positive figure."""
    from fhe_lint.analysis.estimate import table

    code = ("import json; from fhe_lint.analysis.concrete_cost import measure_lookup, time_lookups, "
            "concrete_version; print(json.dumps([concrete_version(), measure_lookup(5, 5), "
            "measure_lookup(8, 10, rounding=4, fresh=True), time_lookups(3, 3, 2, runs=1)]))")
    p = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    version, plain, rounded, (complexity, seconds) = json.loads(p.stdout.strip().splitlines()[-1])
    assert complexity > 0 and seconds > 0
    if version != table()["concrete_python"]:
        pytest.skip(f"concrete-python {version} here, the table holds {table()['concrete_python']}'s figures")
    shipped = {(e["bits"], e["norm2_bits"], e["input"], e.get("rounding_bits")): e for e in table()["lookups"]}
    assert plain == shipped[(5, 5, "lookup", None)]
    assert rounded == shipped[(8, 10, "model", 4)]
