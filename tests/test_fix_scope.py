"""The fix satisfies exactly the findings the rules kept: nothing a suppression hides, nothing a
selection leaves out, and a finding no pruning can resolve is `fixable: false` and named."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from conftest import LOSSY, lint_json
from onnx import numpy_helper
from qonnx_builder import QonnxBuilder, integer_weights
from reference import concrete_bits, run

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_per_node_ignore_all_means_the_fix_leaves_that_layer_alone(tmp_path):
    shutil.copy(EXAMPLES / "overflow.onnx", tmp_path / "m.onnx")
    (tmp_path / "fhe-lint.toml").write_text('per-node-ignores = { "/seq/seq.3/*" = ["ALL"] }\n')
    before = (tmp_path / "m.onnx").read_bytes()
    rc, rep = lint_json(tmp_path / "m.onnx", "--fix", *LOSSY)
    assert rc == 0 and rep["files"][0]["fix"]["pruned"] == {} and rep["files"][0]["fix"]["refused"] is None
    assert (tmp_path / "m.onnx").read_bytes() == before


def test_strict_fix_of_a_selection_without_findings_prunes_nothing(tmp_path):
    shutil.copy(EXAMPLES / "clean.onnx", tmp_path / "m.onnx")
    before = (tmp_path / "m.onnx").read_bytes()
    rc, rep = lint_json(tmp_path / "m.onnx", "--select", "FHE002", "--strict", "--fix", *LOSSY)
    assert rc == 0 and rep["files"][0]["diagnostics"] == [] and rep["files"][0]["fix"]["pruned"] == {}
    assert (tmp_path / "m.onnx").read_bytes() == before


def test_strict_fix_of_fhe002_alone_prunes_to_the_budget_only(tmp_path):
    """With FHE001 not selected, the fix owes the exact bound nothing: each neuron keeps exactly its
    budget of non-zeros (the L1 cut), whatever its accumulator width."""
    out = tmp_path / "fixed.onnx"
    _, before = lint_json(EXAMPLES / "overflow.onnx", "--select", "FHE002")
    limits = {d["node"]: d["limit"] for d in before["files"][0]["diagnostics"]}
    assert limits
    assert lint_json(EXAMPLES / "overflow.onnx", "--select", "FHE002", "--strict", "--fix", *LOSSY, "-o", out)[0] == 0
    rc, after = lint_json(out, "--select", "FHE002", "--strict")
    assert rc == 0
    for layer in after["files"][0]["layers"]:
        if layer["node"] in limits:
            assert layer["max_nonzero"] == limits[layer["node"]]


def _strided_conv_transpose(rng: np.random.Generator) -> tuple[onnx.ModelProto, float, float]:
    """x (6-bit signed) -> ConvTranspose(8 -> 3 channels, 3x3, stride 2), weights 6-bit."""
    s_x, s_w = 0.5, 0.25
    _, w = integer_weights(rng, (8, 3, 3, 3), 6, s_w)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 8, 3, 3]), s_x, 6, signed=True)
    return b.build(b.node("ConvTranspose", [x, b.weight(w, s_w, 6)], name="up", strides=[2, 2],
                          kernel_shape=[3, 3])), s_x, s_w


def _worst_bits_by_impulses(model: onnx.ModelProto, s_x: float, s_w: float, x_lo: int, x_hi: int) -> int:
    """An oracle independent of fhe-lint's phase logic: the layer's integer linear map, read off
    onnx's reference evaluator one unit impulse at a time; each output's exact worst case is then
    the sum of its terms' extremes (every term reads a different input element)."""
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    columns = []
    for i in range(int(np.prod(shape))):
        impulse = np.zeros(int(np.prod(shape)))
        impulse[i] = s_x
        columns.append(np.round(run(model, impulse.reshape(shape)).ravel() / (s_x * s_w)).astype(np.int64))
    m = np.stack(columns, axis=1)
    hi = np.maximum(m * x_lo, m * x_hi).sum(axis=1)
    lo = np.minimum(m * x_lo, m * x_hi).sum(axis=1)
    return concrete_bits(int(lo.min()), int(hi.max()))


def test_strided_conv_transpose_is_fixed_phase_by_phase(tmp_path):
    model, s_x, s_w = _strided_conv_transpose(np.random.default_rng(3))
    src, out = tmp_path / "up.onnx", tmp_path / "fixed.onnx"
    onnx.save(model, src)
    rc, rep = lint_json(src, "--n-max", "13", "--ignore", "FHE004")
    (layer,) = rep["files"][0]["layers"]
    assert rc == 1 and layer["accumulator_bits"] == _worst_bits_by_impulses(model, s_x, s_w, -32, 31) > 13
    assert all(d["fixable"] for d in rep["files"][0]["diagnostics"] if d["code"] == "FHE001")

    rc, rep = lint_json(src, "--n-max", "13", "--ignore", "FHE004", "--fix", *LOSSY, "-o", out, "--max-prune", "100")
    assert rc == 0 and rep["files"][0]["fix"]["pruned"]["up"] > 0
    fixed = onnx.load(out)
    assert _worst_bits_by_impulses(fixed, s_x, s_w, -32, 31) <= 13  # the oracle agrees it now fits
    w0, w1 = (numpy_helper.to_array(next(t for t in m.graph.initializer if t.dims and len(t.dims) == 4))
              for m in (model, fixed))
    assert ((w1 == w0) | (w1 == 0)).all()  # weights are only removed


def test_a_sum_without_weights_is_not_fixable_and_the_refusal_names_it(tmp_path):
    b = QonnxBuilder()
    x = b.quant(b.input([1, 2, 16, 16]), 0.1, 8, signed=False)  # 256 taps of [0, 255]: 16 bits
    model = b.build(b.node("AveragePool", [x], name="gap", kernel_shape=[16, 16]))
    onnx.save(model, tmp_path / "gap.onnx")
    before = (tmp_path / "gap.onnx").read_bytes()
    rc, rep = lint_json(tmp_path / "gap.onnx", "--n-max", "15", "--fix", *LOSSY)
    (d,) = rep["files"][0]["diagnostics"]
    assert rc == 1 and d["code"] == "FHE001" and d["fixable"] is False
    refused = rep["files"][0]["fix"]["refused"]
    assert "FHE001" in refused and "gap" in refused
    assert (tmp_path / "gap.onnx").read_bytes() == before
