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


def test_rounding_bits_cap_the_lookups_from_flag_and_config(tmp_path):
    _, rep = lint_json(FIXTURES / "mlp_w4a4_deep.onnx", "--rounding-bits", "6")
    f = rep["files"][0]
    assert {layer["tlu_bits"] for layer in f["layers"][:-1]} == {6} and f["fhe_cost"]["rounding_bits"] == 6
    assert f["fhe_cost"]["tlu_count"] == 240  # rounding narrows lookups, it does not remove them
    (tmp_path / "fhe-lint.toml").write_text("rounding-bits = 9\n")
    (tmp_path / "m.onnx").write_bytes((FIXTURES / "mlp_w4a4_deep.onnx").read_bytes())
    _, rep = lint_json(tmp_path / "m.onnx")
    assert rep["files"][0]["fhe_cost"]["max_tlu_bits"] == 9


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
    _, rep = lint_json(model, "--max-lookup-bits", "12", "--rounding-bits", "12", "--select", "FHE007")
    assert rep["files"][0]["diagnostics"] == []
