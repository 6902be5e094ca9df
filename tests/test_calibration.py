"""--calibration: observed accumulator ranges equal what Concrete ML measured on the same inputs;
fix impact on predictions; the activation-aware order; the bit-width advice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, lint_json, run_cli

from fhe_lint import bounds

NAMES = sorted(json.loads((FIXTURES / "truth.json").read_text()))


@pytest.mark.parametrize("name", NAMES)
def test_observed_ranges_equal_concrete_ml_calibration(name, truth):
    rc, rep = lint_json(FIXTURES / f"{name}.onnx", "--calibration", FIXTURES / f"{name}.calib.npy")
    layers = {layer["node"]: layer for layer in rep["files"][0]["layers"]}
    measured = truth[name]["calibration"].get("layers") or {}
    assert all("observed_range" in layer for layer in layers.values())
    for node, t in measured.items():
        assert layers[node]["observed_range"] == t["range"], node
        assert layers[node]["observed_bits"] == t["bitwidth"], node
    for layer in layers.values():  # the worst case always contains what data reaches
        lo, hi = layer["accumulator_range"]
        assert lo <= layer["observed_range"][0] and layer["observed_range"][1] <= hi


def test_silent_overflow_shows_in_the_headroom():
    rc, rep = lint_json(FIXTURES / "cnn_w6a6_overflow.onnx", "--calibration", FIXTURES / "cnn_w6a6_overflow.calib.npy")
    fc = next(layer for layer in rep["files"][0]["layers"] if layer["node"] == "/fc/Gemm")
    assert fc["observed_bits"] <= 16 < fc["accumulator_bits"] and rc == 1


def test_fix_impact_reported_and_max_agreement_drop(tmp_path):
    src, calib = FIXTURES / "cnn_w6a6_overflow.onnx", FIXTURES / "cnn_w6a6_overflow.calib.npy"
    prune = ("--fix-strategy", "prune")  # the strategy that loses predictions on this model
    rc, rep = lint_json(src, "--calibration", calib, "--fix", "-o", tmp_path / "f.onnx", "--select", "FHE001", *prune)
    fix = rep["files"][0]["fix"]
    assert rc == 0 and 0.5 < fix["agreement"] < 1.0 and fix["max_abs_change"] > 0
    drop = 100 * (1 - fix["agreement"])
    rc, rep = lint_json(src, "--calibration", calib, "--fix", "-o", tmp_path / "g.onnx", "--select", "FHE001",
                        "--max-agreement-drop", f"{drop / 2:.3f}", *prune)
    assert rc == 1 and "max-agreement-drop" in rep["files"][0]["fix"]["refused"]
    assert not (tmp_path / "g.onnx").exists()


def test_activation_order_prunes_by_weight_times_activity(tmp_path):
    src, calib = FIXTURES / "mlp_w6a6_unsigned_in.onnx", FIXTURES / "mlp_w6a6_unsigned_in.calib.npy"
    prune = ("--fix-strategy", "prune")
    _, l1 = lint_json(src, "--calibration", calib, "--fix", "-o", tmp_path / "a.onnx", "--select", "FHE001", *prune)
    rc, act = lint_json(src, "--calibration", calib, "--fix", "-o", tmp_path / "b.onnx", "--select", "FHE001",
                        "--fix-order", "activation", *prune)
    assert rc == 0 and lint_json(tmp_path / "b.onnx", "--select", "FHE001")[0] == 0
    assert l1["files"][0]["fix"]["pruned"] != act["files"][0]["fix"]["pruned"]  # a different choice of taps
    assert run_cli(src, "--fix", "--fix-order", "activation", "-o", tmp_path / "c.onnx").returncode == 2


def test_advice_fits_without_pruning_at_the_advised_bits():
    """Requantizing the layer to the advised weight bits really fits, one bit more does not."""
    from pathlib import Path

    from fhe_lint.analysis.advice import bit_advice
    from fhe_lint.linter import lint_path
    from fhe_lint.settings import Settings

    result = lint_path(Path(FIXTURES / "mlp_w7a7_overflow.onnx"), Settings())
    for la in result.analysis.layers:
        a = bit_advice(la, 16)
        d = la.layer.weight.d.astype(np.int64)
        x = la.layer.input.range

        def bits_at(b: int) -> int:
            scaled = np.round(d * ((2 ** (b - 1) - 1) / np.abs(d).max())).astype(np.int64)
            lo, hi = bounds.accumulator_interval(scaled, x.lo, x.hi)
            return bounds.int_bits(int(lo.min()), int(hi.max()))

        assert bits_at(a.max_weight_bits) <= 16 < bits_at(a.max_weight_bits + 1)


@pytest.mark.parametrize("span", [100, 100_000])  # a value-count table, or blocks for wide weights
def test_advice_requantized_sums_are_exact(span):
    from fhe_lint.analysis.advice import _tap_sums

    d = np.random.default_rng(0).integers(-span, span, size=(7, 50))
    for scale in (1.0, 0.37, 0.01):
        pos, neg = _tap_sums(d)(scale)
        q = np.round(d * scale)
        assert pos.tolist() == np.maximum(q, 0).sum(axis=1).tolist()
        assert neg.tolist() == np.minimum(q, 0).sum(axis=1).tolist()


def test_a_model_exported_for_one_example_runs_the_data_one_example_at_a_time(tmp_path):
    """Exports traced with a single example can hard-code that batch (a Reshape to (1, -1)):
    the data then runs in batches of the declared size, with the same observed ranges."""
    import onnx

    m = onnx.load(FIXTURES / "cnn_w3a3.onnx")
    (flatten,) = [n for n in m.graph.node if n.op_type == "Flatten"]
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "fixed_batch"))
    reshape = onnx.helper.make_node("Reshape", [flatten.input[0], "fixed_batch"], list(flatten.output))
    nodes = [reshape if n is flatten else n for n in m.graph.node]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.save(m, tmp_path / "fixed.onnx")
    data = ("--calibration", FIXTURES / "cnn_w3a3.calib.npy")
    _, original = lint_json(FIXTURES / "cnn_w3a3.onnx", *data)
    code, fixed = lint_json(tmp_path / "fixed.onnx", *data)
    assert code == 0 and [layer["observed_range"] for layer in fixed["files"][0]["layers"]] == \
        [layer["observed_range"] for layer in original["files"][0]["layers"]]
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"  # nothing to split by: a clear error
    onnx.save(m, tmp_path / "symbolic.onnx")
    code, rep = lint_json(tmp_path / "symbolic.onnx", *data)
    assert code == 2 and "cannot run the model on the calibration data" in rep["files"][0]["error"]
