"""QDQ, QOperator and float models as onnxruntime and users write them, checked by brute force.

Float models are built here and quantized with onnxruntime's own `quantize_static`; the bound is
compared with an enumeration of every corner of the input box (the extremes of a linear function
over a box sit on its corners) computed from the integer initializers decoded independently.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import LOSSY, lint_json, run_cli
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from qonnx_builder import QonnxBuilder, integer_weights
from reference import run

from fhe_lint.analysis.accumulators import analyse
from fhe_lint.formats.graph import Graph
from fhe_lint.settings import Settings

ort = pytest.importorskip("onnxruntime")
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static  # noqa: E402


def tiny_float_model(path: Path) -> None:
    """Conv(1->3, 2x2) -> Relu -> Flatten -> MatMul(12->3): fan-ins 4 and 12 (enumerable)."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(3, 1, 2, 2)).astype(np.float32)
    w2 = rng.normal(size=(12, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "w2"], ["y"], name="mm"),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 3, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
                          initializer=[numpy_helper.from_array(w1, "w1"),
                                       numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b1"),
                                       numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)


class Reader(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(1)
        self.data = iter([{"x": rng.normal(size=(1, 1, 3, 3)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.data, None)


@pytest.fixture(scope="module", params=[
    (QuantFormat.QDQ, False, QuantType.QUInt8), (QuantFormat.QDQ, True, QuantType.QInt8),
    (QuantFormat.QOperator, False, QuantType.QUInt8), (QuantFormat.QOperator, True, QuantType.QUInt8),
], ids=["qdq", "qdq-per-channel-int8", "qoperator", "qoperator-per-channel"])
def quantized(request, tmp_path_factory):
    fmt, per_channel, activation = request.param
    d = tmp_path_factory.mktemp("ort")
    tiny_float_model(d / "float.onnx")
    quantize_static(str(d / "float.onnx"), str(d / "q.onnx"), Reader(), quant_format=fmt, per_channel=per_channel,
                    activation_type=activation, weight_type=QuantType.QInt8)
    return d / "q.onnx", activation


def _integer_weights(model: onnx.ModelProto, name_prefix: str) -> tuple[np.ndarray, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    q = inits[f"{name_prefix}_quantized"].astype(np.int64)
    zp = inits[f"{name_prefix}_zero_point"].astype(np.int64)
    return q, zp


def _corners(d: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.array(list(itertools.product((lo, hi), repeat=d.shape[1])))
    acc = xs @ d.T  # (corners, neurons)
    return acc.min(axis=0), acc.max(axis=0)


def test_ranges_equal_brute_force(quantized):
    path, activation = quantized
    model = onnx.load(path)
    x = (0, 255) if activation == QuantType.QUInt8 else (-128, 127)
    layers = {la.layer.op: la for la in analyse(path, Graph(model), Settings()).layers}
    conv = next(la for op, la in layers.items() if "Conv" in op)
    mm = next(la for op, la in layers.items() if "MatMul" in op)

    qw1, zp1 = _integer_weights(model, "w1")
    d1 = (qw1 - zp1.reshape(-1, 1, 1, 1)).reshape(3, -1)
    qw2, zp2 = _integer_weights(model, "w2")
    d2 = (qw2 - zp2.reshape(1, -1)).T  # (12, 3) -> neurons are columns
    for la, d in ((conv, d1), (mm, d2)):
        lo, hi = _corners(d, *x)
        assert (la.layer.input.range.lo, la.layer.input.range.hi) == x
        assert la.bounds.lo.tolist() == lo.tolist() and la.bounds.hi.tolist() == hi.tolist()


def test_runtime_range_reported_with_bias(quantized):
    path, _ = quantized
    _, rep = lint_json(path)
    conv = next(layer for layer in rep["files"][0]["layers"] if "Conv" in layer["op"])
    assert "runtime_accumulator_range" in conv  # the int32 bias is inside onnxruntime's accumulator


def test_fix_keeps_the_format(quantized, tmp_path):
    path, _ = quantized
    out = tmp_path / "fixed.onnx"
    p = run_cli(path, "--fix", *LOSSY, "-o", out, "--select", "FHE001", "--max-prune", "100")
    assert p.returncode == 0, p.stdout + p.stderr
    before, after = onnx.load(path), onnx.load(out)
    assert [n.op_type for n in before.graph.node] == [n.op_type for n in after.graph.node]
    t0 = {t.name: t.data_type for t in before.graph.initializer}
    assert t0 == {t.name: t.data_type for t in after.graph.initializer}  # int8 weights stay int8
    qw, zp = _integer_weights(after, "w2")
    q0, _ = _integer_weights(before, "w2")
    pruned = qw != q0
    assert pruned.any() and (qw[pruned] == np.broadcast_to(zp.reshape(1, -1), qw.shape)[pruned]).all()
    sess = ort.InferenceSession(str(out))  # onnxruntime still runs it
    assert sess.run(None, {"x": np.zeros((1, 1, 3, 3), np.float32)})[0].shape == (1, 3)
    assert run_cli(out, "--select", "FHE001").returncode == 0


def test_matmul_integer_bounds_attained_through_the_reference_evaluator(tmp_path):
    """MatMulInteger outputs the int32 accumulator itself: feed each neuron's extreme input.

    The oracle is onnx's reference evaluator (exact integer numpy), not onnxruntime: its u8s8
    kernel saturates pairwise sums at int16 on x86 CPUs without VNNI, so its answer depends on
    the host."""
    rng = np.random.default_rng(2)
    w = rng.integers(-128, 128, size=(6, 4)).astype(np.int8)
    zp = np.array([3, -2, 0, 5], dtype=np.int8)
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "", "wzp"], ["acc"], name="mmi")], "mmi",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 6])],
        [helper.make_tensor_value_info("acc", TensorProto.INT32, [1, 4])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(zp, "wzp")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "mmi.onnx")
    (la,) = analyse(tmp_path / "mmi.onnx", Graph(m), Settings()).layers
    sess = ReferenceEvaluator(m)
    d = w.astype(np.int64) - zp
    for k in range(4):
        for x, bound in ((np.where(d[:, k] > 0, 255, 0), la.bounds.hi[k]), (np.where(d[:, k] > 0, 0, 255), la.bounds.lo[k])):
            acc = sess.run(None, {"x": x.astype(np.uint8)[None, :]})[0]
            assert int(acc[0, k]) == int(bound)


def test_float_model_with_assumed_bits(tmp_path):
    """Concrete ML's post-training quantization: symmetric per-tensor weights, unsigned inputs."""
    tiny_float_model(tmp_path / "float.onnx")
    rc, rep = lint_json(tmp_path / "float.onnx")
    assert rc == 1 and {d["code"] for d in rep["files"][0]["diagnostics"]} == {"FHE005"}
    rc, rep = lint_json(tmp_path / "float.onnx", "--weight-bits", "4", "--input-bits", "3")
    assert rc == 0
    w2 = numpy_helper.to_array(onnx.load(tmp_path / "float.onnx").graph.initializer[2])
    q = np.round(w2 / (np.abs(w2).max() / 7)).astype(np.int64).T
    lo, hi = _corners(q, 0, 7)
    mm = next(layer for layer in rep["files"][0]["layers"] if layer["op"] == "MatMul")
    assert mm["accumulator_range"] == [int(lo.min()), int(hi.max())] and mm["weight_bits"] == 4


def test_float_model_fix_writes_exact_zeros(tmp_path):
    tiny_float_model(tmp_path / "float.onnx")
    out = tmp_path / "fixed.onnx"
    args = ["--weight-bits", "8", "--input-bits", "8"]
    assert run_cli(tmp_path / "float.onnx", *args).returncode == 1
    p = run_cli(tmp_path / "float.onnx", *args, "--fix", *LOSSY, "-o", out, "--max-prune", "100")
    assert p.returncode == 0, p.stdout + p.stderr
    before = numpy_helper.to_array(onnx.load(tmp_path / "float.onnx").graph.initializer[2])
    after = numpy_helper.to_array(onnx.load(out).graph.initializer[2])
    changed = before != after
    assert changed.any() and (after[changed] == 0.0).all() and after.dtype == np.float32


# --- value-moving ops between a quantizer and a layer ---

@pytest.mark.parametrize("op", ["Resize", "DepthToSpace", "Slice", "Gather", "Split", "Concat", "Pad", "MaxPool"])
def test_value_moving_ops_are_walked_through(op):
    rng = np.random.default_rng(3)
    b = QonnxBuilder()
    h = b.quant(b.input([1, 4, 4, 4]), 0.1, 3, signed=False)  # [0, 7]
    if op == "Resize":
        h = b.node("Resize", [h, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest")
    elif op == "DepthToSpace":
        h = b.node("DepthToSpace", [h], blocksize=2)
    elif op == "Slice":
        h = b.node("Slice", [h, b.const_int([0]), b.const_int([2]), b.const_int([1])])
    elif op == "Gather":
        h = b.node("Gather", [h, b.const_int([0, 2])], axis=1)
    elif op == "Split":
        out = [b.fresh("split"), b.fresh("split")]
        b.nodes.append(helper.make_node("Split", [h], out, axis=1, name="split"))
        h = out[0]
    elif op == "Concat":
        h = b.node("Concat", [h, b.quant(b.input([1, 4, 4, 4], name="y"), 0.1, 2, signed=True)], axis=1)
    elif op == "Pad":
        h = b.node("Pad", [h, b.const_int([0, 0, 1, 1, 0, 0, 1, 1])])
    else:
        h = b.node("MaxPool", [h], kernel_shape=[2, 2])
    c = 2 if op in ("Slice", "Gather", "Split") else (1 if op == "DepthToSpace" else (8 if op == "Concat" else 4))
    _, w = integer_weights(rng, (2, c, 1, 1), 4)
    model = b.build(b.node("Conv", [h, b.weight(w, 0.1, 4)], kernel_shape=[1, 1]))
    (la,) = analyse(Path("m.onnx"), Graph(model), Settings()).layers
    expected = (-2, 7) if op == "Concat" else (0, 7)
    assert (la.layer.input.range.lo, la.layer.input.range.hi) == expected


def test_conv_transpose_bound_contains_every_output():
    rng = np.random.default_rng(4)
    q, w = integer_weights(rng, (2, 3, 3, 3), 4, 0.25)  # (C_in, C_out, k, k)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 2, 4, 4]), 0.5, 3, signed=True)
    model = b.build(b.node("ConvTranspose", [x, b.weight(w, 0.25, 4)], strides=[2, 2], kernel_shape=[3, 3]))
    (la,) = analyse(Path("m.onnx"), Graph(model), Settings()).layers
    assert (la.layer.neurons, la.layer.fan_in) == (3, 18)
    seen_hi = np.full(3, -10**9)
    for _ in range(200):
        xi = rng.integers(-4, 4, size=(1, 2, 4, 4))
        acc = np.round(run(model, xi * 0.5) / (0.5 * 0.25)).astype(np.int64).transpose(1, 0, 2, 3).reshape(3, -1)
        assert (acc.max(axis=1) <= la.bounds.hi).all() and (acc.min(axis=1) >= la.bounds.lo).all()
        seen_hi = np.maximum(seen_hi, acc.max(axis=1))
    full = np.where(q > 0, q * 3, q * -4).transpose(1, 0, 2, 3).reshape(3, -1).sum(axis=1)
    assert (la.bounds.hi < full).all()  # stride 2: an output never sums all nine taps


def test_pools_and_encrypted_matmul_are_weightless_sums():
    b = QonnxBuilder()
    x = b.quant(b.input([1, 2, 4, 4]), 0.1, 4, signed=False)  # [0, 15]
    g = b.node("GlobalAveragePool", [x])
    a = b.node("AveragePool", [x], kernel_shape=[2, 2])
    y = b.quant(b.input([1, 2, 4, 4], name="y"), 0.1, 3, signed=True)  # [-4, 3]
    mm = b.node("MatMul", [x, y])
    model = b.build(b.node("Concat", [b.node("Flatten", [g]), b.node("Flatten", [a]), b.node("Flatten", [mm])], axis=1))
    layers = {la.layer.op: la for la in analyse(Path("m.onnx"), Graph(model), Settings()).layers}
    assert (layers["GlobalAveragePool"].bounds.range.lo, layers["GlobalAveragePool"].bounds.range.hi) == (0, 16 * 15)
    assert (layers["AveragePool"].bounds.range.lo, layers["AveragePool"].bounds.range.hi) == (0, 4 * 15)
    assert (layers["MatMul"].bounds.range.lo, layers["MatMul"].bounds.range.hi) == (4 * 15 * -4, 4 * 15 * 3)
    assert layers["MatMul"].bounds.omega is None


def test_int4_qdq_weights_are_read_and_fixed_in_place(tmp_path):
    tiny_float_model(tmp_path / "float.onnx")
    m = onnx.load(tmp_path / "float.onnx")
    m.opset_import[0].version = 21  # int4 QuantizeLinear/DequantizeLinear
    onnx.save(m, tmp_path / "float21.onnx")
    quantize_static(str(tmp_path / "float21.onnx"), str(tmp_path / "q4.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt4)
    model = onnx.load(tmp_path / "q4.onnx")
    mm = next(la for la in analyse(tmp_path / "q4.onnx", Graph(model), Settings()).layers if la.layer.op == "MatMul")
    assert mm.layer.weight.bits == 4
    inits = {t.name: numpy_helper.to_array(t).astype(np.int64) for t in model.graph.initializer}
    d = (inits["w2_quantized"] - inits["w2_zero_point"]).T
    lo, hi = _corners(d, 0, 255)
    assert mm.bounds.lo.tolist() == lo.tolist() and mm.bounds.hi.tolist() == hi.tolist()
    out = tmp_path / "fixed.onnx"
    assert run_cli(tmp_path / "q4.onnx", "--fix", *LOSSY, "-o", out, "--n-max", "10", "--select", "FHE001",
                   "--max-prune", "100").returncode == 0
    fixed = {t.name: t.data_type for t in onnx.load(out).graph.initializer}
    assert fixed["w2_quantized"] == TensorProto.INT4
    assert ort.InferenceSession(str(out)).run(None, {"x": np.zeros((1, 1, 3, 3), np.float32)})[0].shape == (1, 3)


def test_residual_add_of_two_quantized_branches():
    rng = np.random.default_rng(5)
    b = QonnxBuilder()
    x = b.input([1, 8])
    left, right = b.quant(x, 0.1, 3, signed=True), b.quant(b.node("Relu", [x]), 0.1, 4, signed=False)
    summed = b.node("Add", [left, right])  # [-4, 3] + [0, 15] = [-4, 18]
    _, w = integer_weights(rng, (2, 8), 4)
    other = b.node("Add", [left, b.quant(x, 0.2, 4, signed=False)])  # another scale: no common grid
    model = b.build(b.node("Concat", [b.node("Gemm", [summed, b.weight(w, 0.1, 4)], name="res", transB=1),
                                      b.node("Gemm", [other, b.weight(w, 0.1, 4)], name="mixed", transB=1)], axis=1))
    layers = {la.name: la for la in analyse(Path("m.onnx"), Graph(model), Settings()).layers}
    res = layers["res"].layer.input
    assert (res.range.lo, res.range.hi, res.bits) == (-4, 18, 6)
    assert layers["mixed"].bounds is None and "different scales" in layers["mixed"].layer.unknown


@pytest.mark.parametrize("dims", [1, 3])
def test_conv_1d_and_3d(dims):
    rng = np.random.default_rng(6)
    q, w = integer_weights(rng, (3, 2) + (2,) * dims, 4, 0.25)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 2] + [4] * dims), 0.5, 3, signed=True)
    model = b.build(b.node("Conv", [x, b.weight(w, 0.25, 4)], kernel_shape=[2] * dims, pads=[1] * (2 * dims)))
    (la,) = analyse(Path("m.onnx"), Graph(model), Settings()).layers
    assert (la.layer.neurons, la.layer.fan_in) == (3, 2 * 2**dims)
    full = q.reshape(3, -1)
    assert la.bounds.hi.tolist() == np.where(full > 0, full * 3, full * -4).sum(axis=1).tolist()
    for _ in range(20):
        xi = rng.integers(-4, 4, size=[1, 2] + [4] * dims)
        acc = np.round(run(model, xi * 0.5) / (0.5 * 0.25)).astype(np.int64).reshape(3, -1)
        assert (acc.max(axis=1) <= la.bounds.hi).all() and (acc.min(axis=1) >= la.bounds.lo).all()


def test_reduce_sum_is_a_weightless_sum():
    b = QonnxBuilder()
    x = b.quant(b.input([1, 3, 5]), 0.1, 4, signed=True)  # [-8, 7]
    model = b.build(b.node("ReduceSum", [x, b.const_int([2])], keepdims=0))
    (la,) = analyse(Path("m.onnx"), Graph(model), Settings()).layers
    assert (la.layer.fan_in, la.bounds.range.lo, la.bounds.range.hi) == (5, -40, 35)


def test_weight_computed_from_constants_is_unknown_not_encrypted():
    """A weight behind an op fhe-lint does not fold (here Identity before the Quant) is FHE005,
    never mistaken for a second encrypted operand."""
    rng = np.random.default_rng(7)
    _, w = integer_weights(rng, (3, 4), 4)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 4]), 0.1, 4)
    wq = b.quant(b.node("Identity", [b.const(w.T.copy())]), 0.1, 4, narrow=True)
    model = b.build(b.node("MatMul", [x, wq], name="mm"))
    (la,) = analyse(Path("m.onnx"), Graph(model), Settings()).layers
    assert la.bounds is None and "computed by ops from constants" in la.layer.unknown
