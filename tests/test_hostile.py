"""Hostile and broken inputs: one line `fhe-lint: error: ...`, exit 2, no traceback, nothing read
outside the model's directory. Each row of the README's hostile-input table is a test here."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import FIXTURES, lint_json, run_cli
from onnx import helper
from qonnx_builder import QonnxBuilder, integer_weights
from test_cli import assert_one_line_error

CLEAN = FIXTURES / "mlp_w2a2.onnx"


def save(model: onnx.ModelProto, path) -> str:
    path.write_bytes(model.SerializeToString())
    return path


def gemm_model(w_scale=0.1, bits=4.0, weight=None, x_bits=4, zero_point=0.0, bits_input=False):
    rng = np.random.default_rng(0)
    _, w = integer_weights(rng, (3, 4), 4)
    b = QonnxBuilder()
    x = b.input([1, 4])
    bw = b.input([], name="bits") if bits_input else bits
    xq = b.quant(x, 0.1, x_bits)
    wq = b.quant(b.const(w if weight is None else weight), w_scale, bw, narrow=True, zero_point=zero_point)
    return b.build(b.node("Gemm", [xq, wq], transB=1))


def test_other_protobuf_message(tmp_path):
    tensor = onnx.numpy_helper.from_array(np.arange(10, dtype=np.int64).reshape(2, 5), "t")
    path = tmp_path / "tensor.onnx"
    path.write_bytes(tensor.SerializeToString())
    assert_one_line_error(run_cli(path), "not an ONNX model")


def test_checker_failure_is_a_finding_and_the_rest_is_linted(tmp_path):
    m = onnx.load(CLEAN)
    victim = m.graph.node[2]
    victim.op_type = "NoSuchOp"
    rc, rep = lint_json(save(m, tmp_path / "bad.onnx"))
    found = {(d["code"], d["node"]): d for d in rep["files"][0]["diagnostics"]}
    assert rc == 1 and "error" not in rep["files"][0]
    assert "No Op registered for NoSuchOp" in found[("FHE006", None)]["checker"]
    assert ("FHE004", victim.name) in found  # named, not silently skipped
    assert [layer["node"] for layer in rep["files"][0]["layers"]] == ["/seq/seq.3/Gemm"]


def test_cycle(tmp_path):
    m = onnx.load(CLEAN)
    first, last = m.graph.node[0], m.graph.node[-1]
    first.input[0] = last.output[0]  # the first quantizer now reads the model's output
    assert_one_line_error(run_cli(save(m, tmp_path / "cycle.onnx")), "the graph has a cycle")


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"w_scale": 0.0}, "scale must be positive"),
    ({"w_scale": -0.5}, "scale must be positive"),
    ({"w_scale": float("inf")}, "NaN, Inf"),
    ({"w_scale": float("nan")}, "NaN, Inf"),
    ({"weight": np.full((3, 4), np.nan, dtype=np.float32)}, "NaN, Inf"),
    ({"w_scale": np.full((5, 1), 0.1)}, "do not match weight"),
    ({"zero_point": 0.5}, "integer-valued"),
    ({"bits_input": True}, "bit-width is not a constant"),
])
def test_bad_quantizer_parameters(kwargs, fragment, tmp_path):
    assert_one_line_error(run_cli(save(gemm_model(**kwargs), tmp_path / "q.onnx")), fragment)


def test_int64_overflow_risk_stays_exact(tmp_path):
    """32-bit weights x 32-bit inputs: each product near 2^62, their sum past int64."""
    w = np.array([[2**31 - 1] * 8, [-(2**31) + 1] * 8], dtype=np.float64).astype(np.float32)
    b = QonnxBuilder()
    xq = b.quant(b.input([1, 8]), 1.0, 32)
    wq = b.quant(b.const(w), 1.0, 32, narrow=True)
    path = save(b.build(b.node("Gemm", [xq, wq], transB=1)), tmp_path / "big.onnx")
    rc, rep = lint_json(path)
    q = int(np.float32(2**31 - 1))  # float32 rounds to 2^31, clipped to the grid's 2^31 - 1
    q = min(q, 2**31 - 1)
    layer = rep["files"][0]["layers"][0]
    assert layer["accumulator_range"] == [-8 * q * 2**31, 8 * q * 2**31]
    assert layer["accumulator_bits"] == (8 * q * 2**31 - 1).bit_length() + 1
    assert rc == 1


def _external_model(tmp_path):
    """The clean fixture with its weights in an external file beside it."""
    m = onnx.load(CLEAN)
    d = tmp_path / "ext"
    d.mkdir()
    onnx.save(m, d / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    return d / "m.onnx"


def _relocate(path, location: str):
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    path.write_bytes(m.SerializeToString())
    return path


def test_external_data_inside_the_directory_is_read(tmp_path):
    rc, rep = lint_json(_external_model(tmp_path))
    assert rc == 0 and rep["files"][0]["layers"][0]["accumulator_range"] == [-40, 35]


@pytest.mark.parametrize("where", ["absolute", "parent", "symlink"])
def test_external_data_escaping_the_directory_is_refused(where, tmp_path):
    path = _external_model(tmp_path)
    secret = tmp_path / "secret.data"
    os.rename(path.parent / "m.data", secret)
    if where == "absolute":
        _relocate(path, str(secret))
    elif where == "parent":
        _relocate(path, "../secret.data")
    else:
        os.symlink(secret, path.parent / "m.data")
    assert_one_line_error(run_cli(path), "outside the model's directory")


def test_huge_non_onnx_file_is_not_read(tmp_path):
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.write(b"PK")
        f.truncate(3 * 2**30)  # sparse: 3 GiB on paper, nothing on disk
    assert_one_line_error(run_cli(path), "2 GiB")
    path.write_bytes(b"PK")
    with open(path, "ab") as f:
        f.truncate(2**30)
    assert_one_line_error(run_cli(path), "not an ONNX model")


def test_node_without_name_and_unknown_attributes_do_not_crash(tmp_path):
    m = onnx.load(CLEAN)
    for n in m.graph.node:
        n.name = ""
    m.graph.node[1].attribute.append(helper.make_attribute("exotic", 3))
    rc, rep = lint_json(save(m, tmp_path / "anon.onnx"))
    assert rc == 0 and [layer["node"] for layer in rep["files"][0]["layers"]] == ["Gemm_2", "Gemm_6"]


def test_rounding_mode_with_invalid_utf8(tmp_path):
    """Found by the fuzzer: an attribute string that is not UTF-8 is a clear error, not a crash."""
    m = onnx.load(CLEAN)
    quant = next(n for n in m.graph.node if n.op_type == "Quant" and "weight" in n.name)
    for a in quant.attribute:
        if a.name == "rounding_mode":
            a.s = b"R\xd5\x00ND"
    assert_one_line_error(run_cli(save(m, tmp_path / "utf8.onnx")), "'rounding_mode' is not valid UTF-8")


def test_absurd_zero_point(tmp_path):
    """Found by the fuzzer: a zero-point no integer type holds."""
    assert_one_line_error(run_cli(save(gemm_model(zero_point=1e30), tmp_path / "zp.onnx")), "far outside")


def test_a_name_that_is_not_utf8_is_refused_not_passed_on(tmp_path):
    """Found by the fuzzer once the checker's verdict became a warning: protobuf hands such a
    string over as bytes, which no name comparison survives."""
    data = onnx.load(CLEAN).SerializeToString()
    name = onnx.load(CLEAN).graph.node[2].name.encode()
    (tmp_path / "name.onnx").write_bytes(data.replace(name, b"\xff\xfe" + name[2:], 1))
    assert_one_line_error(run_cli(tmp_path / "name.onnx"), "is not valid UTF-8")
