"""What a model will cost in FHE: table lookups per inference and their width, statically.

The truth is what Concrete ML 1.9 reported compiling the fixtures (``programmable_bootstrap_count``
in ``circuit.statistics``, measured for issue 17): mlp_w2a2 128, cnn_w3a3 492, mlp_w4a4_deep 240,
mlp_w6a6_unsigned_in 80."""

from __future__ import annotations

import pytest
from conftest import FIXTURES, lint_json

CONCRETE_ML_PBS = {"mlp_w2a2": 128, "cnn_w3a3": 492, "mlp_w4a4_deep": 240, "mlp_w6a6_unsigned_in": 80}


@pytest.mark.parametrize("name", sorted(CONCRETE_ML_PBS))
def test_lookup_count_is_concrete_mls(name):
    _, rep = lint_json(FIXTURES / f"{name}.onnx")
    f = rep["files"][0]
    assert f["fhe_cost"]["tlu_count"] == CONCRETE_ML_PBS[name]
    *hidden, last = f["layers"]
    assert last["tlu_count"] == 0 and last["tlu_bits"] is None  # dequantized by the client
    assert all(layer["tlu_bits"] == layer["accumulator_bits"] for layer in hidden)
    assert f["fhe_cost"]["max_tlu_bits"] == max(layer["accumulator_bits"] for layer in hidden)


# Concrete ML 1.9 with rounding_threshold_bits=6, compiled on the fixtures' calibration sets
# (measured for issue 17): exact rounding takes one bootstrap per dropped bit.
CONCRETE_ML_PBS_ROUNDED_6 = {"mlp_w4a4_deep": 1344, "cnn_w3a3": 1200, "mlp_w6a6_unsigned_in": 800}


@pytest.mark.parametrize("name", sorted(CONCRETE_ML_PBS_ROUNDED_6))
def test_rounding_adds_a_bootstrap_per_dropped_bit_as_concrete_ml_counts(name):
    _, rep = lint_json(FIXTURES / f"{name}.onnx", "--rounding-bits", "6", "--calibration",
                       FIXTURES / f"{name}.calib.npy")
    assert rep["files"][0]["fhe_cost"]["tlu_count"] == CONCRETE_ML_PBS_ROUNDED_6[name]


def test_rounding_bits_cap_the_lookups_from_flag_and_config(tmp_path):
    _, rep = lint_json(FIXTURES / "mlp_w4a4_deep.onnx", "--rounding-bits", "6")
    f = rep["files"][0]
    assert {layer["tlu_bits"] for layer in f["layers"][:-1]} == {6} and f["fhe_cost"]["rounding_bits"] == 6
    # no data: the worst-case widths (12 bits everywhere) are rounded, 6 bootstraps more per output
    assert [layer["accumulator_bits"] for layer in f["layers"][:-1]] == [12, 12, 12]
    assert f["fhe_cost"]["tlu_count"] == (96 + 96 + 48) * (1 + 12 - 6)
    (tmp_path / "fhe-lint.toml").write_text("rounding-bits = 8\n")
    (tmp_path / "m.onnx").write_bytes((FIXTURES / "mlp_w4a4_deep.onnx").read_bytes())
    _, rep = lint_json(tmp_path / "m.onnx")
    assert rep["files"][0]["fhe_cost"]["max_tlu_bits"] == 8


def test_an_output_of_unknown_shape_leaves_the_count_unknown(tmp_path):
    import onnx

    m = onnx.load(FIXTURES / "cnn_w3a3.onnx")
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"  # a convolution's outputs depend on it
    m.graph.ClearField("value_info")
    onnx.save(m, tmp_path / "m.onnx")
    _, rep = lint_json(tmp_path / "m.onnx")
    f = rep["files"][0]
    assert [layer["tlu_count"] for layer in f["layers"]] == [None, None, 0]
    assert f["fhe_cost"]["tlu_count"] is None and f["layers"][0]["accumulator_bits"] == 7  # the bound stands


def test_the_output_arithmetic_agrees_with_onnx_shape_inference(tmp_path):
    """The count is computed from each op's own arithmetic on its input's declared shape (a lint
    must not import onnx for shape inference); onnx's inference is the independent check."""
    from pathlib import Path

    import numpy as np
    from qonnx_builder import QonnxBuilder, integer_weights

    from fhe_lint.analysis.cost import _outputs
    from fhe_lint.linter import lint_path
    from fhe_lint.settings import Settings

    b = QonnxBuilder()  # strides, dilations, asymmetric pads, groups, a pool and a transposed conv
    x = b.quant(b.input([1, 4, 11, 9]), 0.1, 4, signed=False)
    _, w = integer_weights(np.random.default_rng(0), (6, 2, 3, 2), 4)
    h = b.node("Conv", [x, b.weight(w, 0.1, 4)], name="conv", strides=[2, 1], dilations=[1, 2],
               pads=[1, 0, 2, 1], group=2)
    h = b.quant(b.node("Relu", [h]), 0.1, 4, signed=False)
    p = b.quant(b.node("AveragePool", [h], name="pool", kernel_shape=[2, 2], strides=[2, 2]), 0.1, 4, signed=False)
    _, wt = integer_weights(np.random.default_rng(1), (6, 3, 3, 3), 4)
    model = b.build(b.node("ConvTranspose", [p, b.weight(wt, 0.1, 4)], name="up", strides=[2, 2]))
    import onnx

    onnx.save(model, tmp_path / "m.onnx")
    paths = [tmp_path / "m.onnx", *sorted(FIXTURES.glob("*.onnx"))]
    checked = 0
    for path in paths:
        analysis = lint_path(Path(path), Settings()).analysis
        for la in analysis.layers:
            inferred = analysis.graph.shape(la.layer.node.output[0])
            if inferred is not None and all(d is not None for d in inferred[1:]):
                assert _outputs(analysis.graph, la) == int(np.prod(inferred[1:])), (path.name, la.name)
                checked += 1
    assert checked >= 15


def test_the_lookup_budget_rule_is_off_by_default_and_rounding_satisfies_it():
    model = FIXTURES / "mlp_w6a6_unsigned_in.onnx"
    _, rep = lint_json(model)
    assert not [d for d in rep["files"][0]["diagnostics"] if d["code"] == "FHE007"]
    _, rep = lint_json(model, "--max-lookup-bits", "12", "--select", "FHE007")
    (d,) = rep["files"][0]["diagnostics"]  # the last layer takes no lookup
    assert (d["node"], d["bits"], d["limit"], d["tlu_count"], d["severity"]) == ("/seq/seq.1/Gemm", 16, 12, 80, "warning")
    _, rep = lint_json(model, "--max-lookup-bits", "12", "--rounding-bits", "8", "--select", "FHE007")
    assert rep["files"][0]["diagnostics"] == []


# Concrete ML 1.9 (concrete-python 2.10), default compile on the fixtures' calibration sets, as
# measured for issue 17: circuit.complexity and size_of_bootstrap_keys + size_of_keyswitch_keys.
CONCRETE_ML_COST = {
    "mlp_w2a2": (4.2186e10, 219676672 + 137461760),
    "cnn_w3a3": (1.7755e12, 7428112384 + 2230976512),
    "mlp_w4a4_deep": (6.3966e12, 896532480 + 87277568),
    "mlp_w6a6_unsigned_in": (5.3091e12, 503971840 + 189235200),
}
CONCRETE_ML_COST_ROUNDED_6 = {
    "mlp_w4a4_deep": (2.7410e11, 907100160 + 408059904),
    "cnn_w3a3": (3.6632e11, 679690240 + 272596992),
    "mlp_w6a6_unsigned_in": (1.7085e11, 1791328256 + 138084352),
}


@pytest.mark.parametrize("rounding,name", [(None, n) for n in sorted(CONCRETE_ML_COST)]
                         + [(6, n) for n in sorted(CONCRETE_ML_COST_ROUNDED_6)])
def test_complexity_and_keys_within_twice_concrete_mls(rounding, name):
    truth = (CONCRETE_ML_COST if rounding is None else CONCRETE_ML_COST_ROUNDED_6)[name]
    extra = () if rounding is None else ("--rounding-bits", str(rounding))
    _, rep = lint_json(FIXTURES / f"{name}.onnx", "--calibration", FIXTURES / f"{name}.calib.npy", *extra)
    e = rep["files"][0]["fhe_cost"]["estimate"]
    keys = e["bootstrap_key_bytes"] + e["keyswitch_key_bytes"]
    assert 0.5 <= e["complexity"] / truth[0] <= 2, e
    assert 0.5 <= keys / truth[1] <= 2, e
    assert e["seconds"] > 0 and e["concrete"]


def test_the_estimate_never_imports_concrete_and_says_whose_seconds(tmp_path):
    import json
    import os
    import subprocess
    import sys

    code = ("import sys, json; from pathlib import Path; from fhe_lint.linter import lint_path;"
            "from fhe_lint.settings import Settings; from fhe_lint.report.model import FileReport;"
            f"r = FileReport.of(lint_path(Path({str(FIXTURES / 'mlp_w2a2.onnx')!r}), Settings()));"
            "print(json.dumps([r.estimate.seconds_from, 'concrete' in sys.modules]))")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}  # no calibration of this machine
    source, imported = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                                 text=True, check=True).stdout)
    assert source.startswith("the reference machine") and not imported
    (tmp_path / "fhe-lint").mkdir()
    (tmp_path / "fhe-lint" / "cost-calibration.json").write_text(
        json.dumps({"seconds_per_complexity_single": 1e-10, "seconds_per_complexity_decomposed": 2e-10,
                    "date": "2026-12-01"}))
    source, _ = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                          text=True, check=True).stdout)
    assert source == "this machine (fhe-lint calibrate-cost, 2026-12-01)"


def test_calibrate_cost_without_concrete_is_one_line_and_exit_2(tmp_path, monkeypatch):
    import importlib.util

    from conftest import run_cli

    if importlib.util.find_spec("concrete") is not None:
        pytest.skip("concrete-python is installed here: the missing-extra message cannot show")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    p = run_cli("calibrate-cost")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "concrete-python" in p.stderr
    assert not (tmp_path / "fhe-lint").exists()  # nothing written


def test_rounding_advice_drops_the_most_bits_within_a_quarter_level():
    from hypothesis import given
    from hypothesis import strategies as st

    from fhe_lint.analysis.rounding import layer_rounding
    from fhe_lint.bounds import int_bits

    @given(st.integers(-(2**15), 0), st.integers(1, 2**15 - 1), st.integers(1, 8),
           st.one_of(st.none(), st.floats(0.01, 5000)))
    def check(lo, hi, a, scaled_level):
        r = layer_rounding(lo, hi, a, scaled_level)
        # accumulator units per level of the next quantizer: from the scales, else the spread
        level = (hi - lo) / 2**a if scaled_level is None else scaled_level
        assert r.bits + r.dropped == int_bits(lo, hi) and r.bits >= 1
        assert r.dropped == 0 or 2 ** (r.dropped - 1) <= level / 4  # at most a quarter level
        assert r.bits == 1 or 2**r.dropped > level / 4  # one more bit would exceed it

    check()


def test_rounding_advice_in_json_and_text_with_calibration_only():
    model, data = FIXTURES / "mlp_w4a4_deep.onnx", FIXTURES / "mlp_w4a4_deep.calib.npy"
    _, rep = lint_json(model)
    assert "rounding_advice" not in rep["files"][0]["fhe_cost"]  # no data, nothing to say
    _, rep = lint_json(model, "--calibration", data)
    cost = rep["files"][0]["fhe_cost"]
    advice = cost["rounding_advice"]
    layers = [layer for layer in rep["files"][0]["layers"] if layer["tlu_count"]]
    assert set(advice["layers"]) == {layer["node"] for layer in layers}
    assert advice["rounding_bits"] == max(x["bits"] for x in advice["layers"].values())
    assert advice["estimate"]["complexity"] < cost["estimate"]["complexity"]
    from conftest import run_cli

    text = run_cli(model, "--calibration", data, "--layers").stdout
    assert f"rounding advice: --rounding-bits {advice['rounding_bits']} " in text


# Brevitas CNNs (QuantConv2d 3x3, QuantReLU, MaxPool2d(k, stride), QuantIdentity, QuantLinear; made
# by fhe_lint.torch.export) compiled by Concrete ML 1.9: programmable_bootstrap_count.
MAXPOOL = FIXTURES.parent / "maxpool"
CONCRETE_ML_PBS_MAXPOOL = {"mp_2_1": 644, "mp_2_2": 324, "mp_3_1": 784}


@pytest.mark.parametrize("name", sorted(CONCRETE_ML_PBS_MAXPOOL))
def test_max_pools_take_a_bootstrap_per_window_element_as_concrete_ml_counts(name):
    _, rep = lint_json(MAXPOOL / f"{name}.onnx")
    f = rep["files"][0]
    assert f["fhe_cost"]["tlu_count"] == CONCRETE_ML_PBS_MAXPOOL[name]
    conv = f["layers"][0]  # the pool's lookups are counted with the layer whose outputs it pools
    assert conv["tlu_count"] > 4 * 6 * 6 and f["fhe_cost"]["estimate"]["complexity"] > 0


def test_a_circuit_is_costed_with_one_kind_of_lookup_and_a_close_call_names_both():
    from fhe_lint.analysis.estimate import LookupLayer, estimate, table

    # 15-bit lookups exist only decomposed: so is every other lookup of the circuit
    e = estimate([LookupLayer(100, 5, 8, True), LookupLayer(10, 15, 12, False)], None)
    assert e.decomposed and e.alternative is None
    wide = [p for p in table()["lookups"] if p["bits"] == 11 and "rounding_bits" not in p]
    assert e.complexity >= 110 * min(p["complexity"] for p in wide)  # the 5-bit ones cost a decomposed lookup
    # 9/10-bit lookups: both kinds are possible; the cheaper is the estimate, the other rides along
    # when within 1.5x (keys differ by far more: the held-out CNN 4-8 of the README)
    e = estimate([LookupLayer(144, 9, 9, True), LookupLayer(128, 10, 9, False)], None)
    assert not e.decomposed and e.alternative is not None and e.alternative.decomposed
    assert e.complexity <= e.alternative.complexity <= 1.5 * e.complexity
    assert e.key_bytes > 10 * e.alternative.key_bytes
    # small lookups: one bootstrap each, nothing close
    e = estimate([LookupLayer(128, 5, 8, True)], None)
    assert not e.decomposed and e.alternative is None
