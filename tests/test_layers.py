"""Layer kinds and layouts, on models built here, checked against an independent execution.

For every neuron the input that attains its upper (lower) worst case is built from the weights
the test itself generated, run through onnx's reference evaluator, and the integer accumulator
recovered from the float output must equal fhe-lint's bound exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qonnx_builder import QonnxBuilder, integer_weights
from reference import run

from fhe_lint.analysis.accumulators import analyse
from fhe_lint.formats.graph import Graph
from fhe_lint.settings import Settings

S_X, S_W = 0.5, 0.25
IN_BITS, W_BITS = 4, 4
X_LO, X_HI = -8, 7  # signed 4-bit input


def analysed(model):
    return analyse(Path("m.onnx"), Graph(model), Settings())


def extreme_inputs(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron (row of q), the integer inputs reaching its maximum and its minimum."""
    return np.where(q > 0, X_HI, X_LO), np.where(q > 0, X_LO, X_HI)


def check_dense(model, q: np.ndarray, scale_w) -> None:
    """q: (neurons, fan_in) integer weights as the layer multiplies them."""
    (la,) = analysed(model).layers
    b = la.bounds
    x_max, x_min = extreme_inputs(q)
    scale = S_X * np.broadcast_to(np.asarray(scale_w, dtype=np.float64).ravel(), (q.shape[0],))
    for k in range(q.shape[0]):
        for x, bound in ((x_max[k], b.hi[k]), (x_min[k], b.lo[k])):
            out = run(model, (x * S_X)[None, :]).ravel()
            assert round(float(out[k]) / scale[k]) == int(bound)
    assert b.nonzero.tolist() == np.count_nonzero(q, axis=1).tolist()


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_layouts(trans_b):
    rng = np.random.default_rng(1)
    q, w = integer_weights(rng, (5, 12), W_BITS, S_W)  # (neurons, fan_in)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 12]), S_X, IN_BITS)
    stored = w if trans_b else w.T
    model = b.build(b.node("Gemm", [x, b.weight(stored, S_W, W_BITS)], transB=trans_b, alpha=2.0))
    (la,) = analysed(model).layers
    assert (la.layer.neurons, la.layer.fan_in) == (5, 12)
    # alpha scales the float output, not the integer accumulator
    b_ = la.bounds
    x_max, _ = extreme_inputs(q)
    for k in range(5):
        out = run(model, (x_max[k] * S_X)[None, :]).ravel()
        assert round(float(out[k]) / (2.0 * S_X * S_W)) == int(b_.hi[k])


def test_matmul_with_transpose_after_weight_quant_and_per_channel_scale():
    """The TFC layout: Quant(W (N, K)) -> Transpose -> MatMul, neuron axis found through the perm."""
    rng = np.random.default_rng(2)
    q, _ = integer_weights(rng, (6, 10), W_BITS)
    scales = np.linspace(0.05, 0.3, 6).astype(np.float32)
    w = (q * scales[:, None]).astype(np.float32)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 10]), S_X, IN_BITS)
    wq = b.weight(w, scales.reshape(6, 1), W_BITS)
    model = b.build(b.node("MatMul", [x, b.node("Transpose", [wq], perm=[1, 0])]))
    check_dense(model, q, scales)


def test_matmul_weight_first_operand():
    """Y = W @ X^T: the weight is input A, its rows are the neurons."""
    rng = np.random.default_rng(3)
    q, w = integer_weights(rng, (4, 9), W_BITS, S_W)
    b = QonnxBuilder()
    x = b.quant(b.input([9, 1]), S_X, IN_BITS)
    model = b.build(b.node("MatMul", [b.weight(w, S_W, W_BITS), x]))
    (la,) = analysed(model).layers
    x_max, x_min = extreme_inputs(q)
    for k in range(4):
        out = run(model, (x_max[k] * S_X)[:, None]).ravel()
        assert round(float(out[k]) / (S_X * S_W)) == int(la.bounds.hi[k])


def test_nonzero_weight_zero_point():
    """acc uses q_w - zp_w; a weight equal to the zero-point is a zero."""
    rng = np.random.default_rng(4)
    zp = 2.0
    q, _ = integer_weights(rng, (3, 8), W_BITS)
    q[:, :2] = 0  # stored as exactly zp after quantization
    q = np.clip(q, -7 - zp + 1, 7 - zp)  # keep q + zp inside the signed narrow grid
    w = (q * S_W).astype(np.float32)  # (q_w - zp) * s = w  <=>  q_w = w / s + zp
    b = QonnxBuilder()
    x = b.quant(b.input([1, 8]), S_X, IN_BITS)
    model = b.build(b.node("Gemm", [x, b.weight(w, S_W, W_BITS, zero_point=zp)], transB=1))
    check_dense(model, q.astype(np.int64), S_W)


def test_conv_single_output_position_is_exact():
    """Input spatial size == kernel: one output position, every tap independent."""
    rng = np.random.default_rng(5)
    q, w = integer_weights(rng, (4, 3, 3, 3), W_BITS, S_W)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 3, 3, 3]), S_X, IN_BITS)
    model = b.build(b.node("Conv", [x, b.weight(w, S_W, W_BITS)], kernel_shape=[3, 3]))
    (la,) = analysed(model).layers
    assert (la.layer.neurons, la.layer.fan_in) == (4, 27)
    q2 = q.reshape(4, -1)
    x_max, x_min = extreme_inputs(q2)
    for k in range(4):
        for x_, bound in ((x_max[k], la.bounds.hi[k]), (x_min[k], la.bounds.lo[k])):
            out = run(model, (x_.reshape(1, 3, 3, 3) * S_X)).ravel()
            assert round(float(out[k]) / (S_X * S_W)) == int(bound)


@pytest.mark.parametrize(("group", "dilation", "stride", "pads"), [(1, 1, 1, [1, 1, 1, 1]), (2, 2, 2, [0, 1, 2, 0]), (4, 1, 1, [1, 1, 1, 1])])
def test_conv_variants_contain_every_output(group, dilation, stride, pads):
    rng = np.random.default_rng(6)
    c_in, c_out = 4, 8
    q, w = integer_weights(rng, (c_out, c_in // group, 3, 3), W_BITS, S_W)
    b = QonnxBuilder()
    x = b.quant(b.input([1, c_in, 9, 9]), S_X, IN_BITS)
    model = b.build(b.node("Conv", [x, b.weight(w, S_W, W_BITS)], kernel_shape=[3, 3], group=group,
                           dilations=[dilation] * 2, strides=[stride] * 2, pads=pads))
    (la,) = analysed(model).layers
    assert la.layer.fan_in == c_in // group * 9
    for _ in range(20):
        xi = rng.integers(X_LO, X_HI + 1, size=(1, c_in, 9, 9))
        acc = np.round(run(model, xi * S_X) / (S_X * S_W)).astype(np.int64)
        per_channel = acc.reshape(c_out, -1)
        assert (per_channel.max(axis=1) <= la.bounds.hi).all()
        assert (per_channel.min(axis=1) >= la.bounds.lo).all()


def test_flatten_maxpool_reshape_are_walked_through():
    """A CNN's fully connected layer after MaxPool + Flatten reads the conv quantizer's integers."""
    rng = np.random.default_rng(7)
    b = QonnxBuilder()
    x = b.quant(b.input([1, 1, 4, 4]), S_X, IN_BITS)
    _, wc = integer_weights(rng, (2, 1, 3, 3), W_BITS, S_W)
    h = b.node("Conv", [x, b.weight(wc, S_W, W_BITS)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    h = b.quant(b.node("Relu", [h]), 0.1, 3, signed=False)
    h = b.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Flatten", [h], axis=1)
    _, wf = integer_weights(rng, (3, 8), W_BITS, S_W)
    model = b.build(b.node("Gemm", [h, b.weight(wf, S_W, W_BITS)], transB=1))
    conv, fc = analysed(model).layers
    assert (fc.layer.input.range.lo, fc.layer.input.range.hi, fc.layer.input.bits) == (0, 7, 3)
    assert fc.layer.fan_in == 8 and fc.bounds is not None


def test_concat_of_quantizers_is_their_union():
    rng = np.random.default_rng(8)
    b = QonnxBuilder()
    x = b.input([1, 8])
    a = b.quant(x, S_X, 3, signed=True)  # [-4, 3]
    c = b.quant(x, S_X, 5, signed=False)  # [0, 31]
    h = b.node("Concat", [a, c], axis=1)
    _, w = integer_weights(rng, (2, 16), W_BITS, S_W)
    model = b.build(b.node("Gemm", [h, b.weight(w, S_W, W_BITS)], transB=1))
    (la,) = analysed(model).layers
    assert (la.layer.input.range.lo, la.layer.input.range.hi, la.layer.input.bits) == (-4, 31, 5)


def test_unknown_ranges_are_reported_not_skipped():
    rng = np.random.default_rng(9)
    b = QonnxBuilder()
    x = b.input([1, 4])
    _, w = integer_weights(rng, (2, 4), W_BITS, S_W)
    h = b.node("Gemm", [x, b.weight(w, S_W, W_BITS)], transB=1, name="float_input")
    h = b.quant(b.node("Relu", [h]), 0.1, 4, signed=False)
    h = b.node("Gemm", [h, b.const(w[:, :2].T.copy())], name="float_weight")
    model = b.build(h)
    layers = {la.name: la for la in analysed(model).layers}
    assert layers["float_input"].bounds is None and "model input" in layers["float_input"].layer.unknown
    assert layers["float_weight"].bounds is None and "no quantizer" in layers["float_weight"].layer.unknown


def test_every_layout_op_has_its_layout_function():
    """The walk's op table (fhe_lint.formats.ops) and the functions that replay it on weights agree."""
    from fhe_lint.formats.weights import LAYOUT_FUNCTIONS
    from fhe_lint.formats.ops import LAYOUT_OPS

    assert set(LAYOUT_FUNCTIONS) == LAYOUT_OPS
