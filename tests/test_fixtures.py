"""Real Brevitas exports against what Concrete ML 1.9 reported when compiling them (truth.json)."""

from __future__ import annotations

import json

import pytest
from conftest import FIXTURES, THIRDPARTY, lint_json

FAILING = {"mlp_w7a7_overflow", "cnn_w6a6_overflow", "mlp_w6a6_unsigned_in"}
NAMES = sorted(json.loads((FIXTURES / "truth.json").read_text()))


@pytest.fixture(scope="module")
def reports() -> dict:
    rc, rep = lint_json(*(FIXTURES / f"{n}.onnx" for n in NAMES))
    assert rc == 1  # some fixtures overflow
    return {n: f for n, f in zip(NAMES, rep["files"])}


@pytest.mark.parametrize("name", NAMES)
def test_first_layer_equals_concrete_worst_case(name, reports, truth):
    measured = truth[name]["first_layer_worst_case"].get("layers")
    if not measured:
        pytest.skip(f"Concrete ML could not compile {name}: {truth[name]['first_layer_worst_case']['error']}")
    layers = {layer["node"]: layer for layer in reports[name]["layers"]}
    node, worst = next(iter(measured.items()))
    assert layers[node]["accumulator_range"] == worst["range"]
    assert layers[node]["accumulator_bits"] == worst["bitwidth"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["calibration", "first_layer_worst_case"])
def test_every_layer_contains_what_concrete_measured(name, mode, reports, truth):
    layers = {layer["node"]: layer for layer in reports[name]["layers"]}
    measured = truth[name][mode].get("layers") or {}
    for node, t in measured.items():
        lo, hi = layers[node]["accumulator_range"]
        assert lo <= t["range"][0] and t["range"][1] <= hi, node
        assert layers[node]["accumulator_bits"] >= t["bitwidth"], node


@pytest.mark.parametrize("name", NAMES)
def test_exit_code_and_fhe001(name, reports):
    rc, _ = lint_json(FIXTURES / f"{name}.onnx")
    fhe001 = {d["node"] for d in reports[name]["diagnostics"] if d["code"] == "FHE001"}
    over = {layer["node"] for layer in reports[name]["layers"] if layer["accumulator_bits"] > 16}
    assert fhe001 == over
    assert rc == (1 if name in FAILING else 0)
    assert bool(over) == (name in FAILING)


def test_silent_overflow_is_caught(truth, reports):
    """cnn_w6a6_overflow compiles at 16 bits on calibration data, yet its worst case does not fit."""
    assert truth["cnn_w6a6_overflow"]["calibration"]["compiles"]
    assert truth["cnn_w6a6_overflow"]["calibration"]["max_bitwidth"] <= 16
    bits = {layer["node"]: layer["accumulator_bits"] for layer in reports["cnn_w6a6_overflow"]["layers"]}
    assert max(bits.values()) > 16


def test_report_contract_keys(reports):
    rep = reports["cnn_w3a3"]
    assert {"path", "n_max", "multiplier", "layers", "diagnostics"} <= set(rep)
    assert set(rep["layers"][0]) >= {
        "node", "op", "neurons", "fan_in", "weight_bits", "input_bits", "input_range", "omega",
        "max_nonzero", "accumulator_range", "accumulator_bits",
    }
    c1 = rep["layers"][0]
    assert (c1["op"], c1["neurons"], c1["fan_in"], c1["weight_bits"], c1["input_bits"]) == ("Conv", 6, 9, 3, 3)
    assert c1["input_range"] == [-4, 3] and c1["omega"] == 65535 // 49


def test_diagnostic_contract_keys():
    _, rep = lint_json(FIXTURES / "mlp_w6a6_unsigned_in.onnx")
    d = next(d for d in rep["files"][0]["diagnostics"] if d["code"] == "FHE001")
    assert {"code", "severity", "node", "neuron", "message", "fixable"} <= set(d)
    assert (d["severity"], d["node"], d["fixable"], d["bits"], d["limit"]) == ("error", "/seq/seq.3/Gemm", True, 17, 16)
    assert rep["summary"]["files"] == 1 and rep["summary"]["errors"] >= 1 and rep["version"] == 1


# --- third-party QONNX models (not shipped here; read from ../shared when present) ---

needs_thirdparty = pytest.mark.skipif(not (THIRDPARTY / "truth.json").exists(), reason="../shared/thirdparty absent")


@needs_thirdparty
@pytest.mark.parametrize("model", ["TFC_2W2A.onnx", "espcn_subpixel_quant.onnx"])
def test_thirdparty_ranges_equal_truth(model):
    truth = json.loads((THIRDPARTY / "truth.json").read_text())[model]
    _, rep = lint_json(THIRDPARTY / model)
    f = rep["files"][0]
    layers = {layer["node"]: layer for layer in f["layers"]}
    fhe005 = {d["node"] for d in f["diagnostics"] if d["code"] == "FHE005"}
    for t in truth["layers"]:
        if t["range"] is None:
            assert t["node"] in fhe005
        else:
            got = layers[t["node"]]
            assert (got["accumulator_range"], got["accumulator_bits"]) == (t["range"], t["bits"])
            assert got["input_range"] == t["input_range"] and got["neurons"] == t["neurons"]
            assert got["fan_in"] == t["fan_in"] and got["max_nonzero"] == t["nonzero_max"]


@needs_thirdparty
def test_thirdparty_unsupported_op_on_encrypted_path():
    _, rep = lint_json(THIRDPARTY / "espcn_subpixel_quant.onnx")
    fhe004 = {d["node"] for d in rep["files"][0]["diagnostics"] if d["code"] == "FHE004"}
    assert fhe004 == {"DepthToSpace_42"}  # BatchNormalization, Relu, Conv, Quant are supported
