"""The pure math: Concrete's bit count, exact intervals (checked by enumeration), Omega."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from conftest import lint_json
from onnx import TensorProto, helper, numpy_helper
from reference import concrete_bits

from fhe_lint import bounds

# DESIGN.md: checked against Concrete's own tracer.
CONCRETE_BITS = [
    ((-274, 251), 10), ((-8, 7), 4), ((-8, 8), 5), ((0, 8), 4), ((-1, 0), 1), ((-32768, 32767), 16),
    ((-32769, 0), 17), ((0, 65535), 16), ((0, 65536), 17), ((0, 0), 1),
]


@pytest.mark.parametrize(("rng", "bits"), CONCRETE_BITS)
def test_range_bits_matches_concrete(rng, bits):
    assert bounds.int_bits(*rng) == bits
    assert bounds.range_bits(np.array([rng[0]]), np.array([rng[1]]))[0] == bits


def test_bits_in_a_signed_layer_count_a_sign_bit():
    # [0, 40000] alone is 16 unsigned bits; inside a layer whose tensor is signed it needs 17.
    assert bounds.range_bits(np.array([0]), np.array([40000]))[0] == 16
    assert bounds.range_bits(np.array([0]), np.array([40000]), signed=True)[0] == 17


def test_bit_length_is_exact_at_powers_of_two():
    xs = np.array([0, 1, 2, 3, 4, 2**31 - 1, 2**31, 2**53 + 1, 2**62 - 1], dtype=np.int64)
    assert bounds.bit_length(xs).tolist() == [int(x).bit_length() for x in xs.tolist()]


@pytest.mark.parametrize("seed", range(5))
def test_interval_is_exact_by_enumeration(seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(-7, 8, size=(3, 4))
    x_lo, x_hi = int(rng.integers(-4, 1)), int(rng.integers(0, 5))
    lo, hi = bounds.accumulator_interval(d, x_lo, x_hi)
    values = np.array([d @ np.array(x) for x in itertools.product(range(x_lo, x_hi + 1), repeat=4)])
    assert lo.tolist() == values.min(axis=0).tolist()
    assert hi.tolist() == values.max(axis=0).tolist()


def test_huge_products_stay_exact():
    d = np.full((1, 4), 2**32, dtype=np.int64)
    lo, hi = bounds.accumulator_interval(d, -(2**31), 2**31 - 1)
    assert int(hi[0]) == 4 * 2**32 * (2**31 - 1)
    assert int(lo[0]) == -4 * 2**32 * 2**31
    assert int(bounds.range_bits(lo, hi)[0]) == max((-int(lo[0]) - 1).bit_length(), int(hi[0]).bit_length()) + 1


@pytest.mark.parametrize(("w", "x", "expected"), [(2, 2, 7281), (4, 4, 291), (6, 6, 16), (7, 7, 4), (8, 8, 1), (9, 8, 0)])
def test_omega(w, x, expected):
    assert bounds.omega(16, w, x) == expected


def test_nonzero_counts_taps_off_the_zero_point():
    assert bounds.nonzero_count(np.array([[0, 1, -2], [0, 0, 0]])).tolist() == [2, 0]


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n_max", [1, 2, 5, 16])
def test_window_is_the_set_of_ranges_that_fit(n_max, signed):
    low, high = bounds.window(n_max, signed)
    edges = {e + k for e in (-(2**n_max), -(2 ** (n_max - 1)), 0, 2 ** (n_max - 1), 2**n_max) for k in (-2, -1, 0, 1)}
    span = sorted(edges) if n_max > 5 else range(-(2**n_max) - 2, 2**n_max + 3)  # all pairs, or the edges
    lo = np.array([a for a in span for b in span if a <= b and (a < 0) <= signed])
    hi = np.array([b for a in span for b in span if a <= b and (a < 0) <= signed])
    fits = bounds.range_bits(lo, hi, signed=signed) <= n_max
    assert (fits == ((lo >= low) & (hi <= high))).all()


def test_window_of_many_limits_is_each_limit_s_window():
    limits = np.array([1, 5, 16, 40, 62])
    for signed in (True, False):
        low, high = bounds.window(limits, signed)
        assert [(int(a), int(b)) for a, b in zip(np.broadcast_to(low, limits.shape), high)] == \
            [bounds.window(int(n), signed) for n in limits]
        low, high = bounds.window(np.array([16, 64]), signed)  # past int64: exact Python integers
        assert int(high[1]) == (2**63 - 1 if signed else 2**64 - 1)


def test_advice_is_exact_where_int64_would_wrap(tmp_path):
    """A float MatMul of fan-in 2,000,000 at 32-bit weights and inputs needs 82 bits; no weight
    or input bit-width alone brings it to 16 (even 1-bit inputs leave ~2e6 x 2^31), so the
    advice must say so rather than wrap around int64 and name a width that fails."""
    w = np.random.default_rng(0).normal(size=(2_000_000, 1)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2_000_000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
                          initializer=[numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "wide.onnx")
    _, rep = lint_json(tmp_path / "wide.onnx", "--weight-bits", "32", "--input-bits", "32")
    (layer,) = rep["files"][0]["layers"]
    lo, hi = layer["accumulator_range"]
    assert layer["accumulator_bits"] == concrete_bits(lo, hi) > 80
    assert (layer["advice"]["max_weight_bits"], layer["advice"]["max_input_bits"]) == (None, None)
