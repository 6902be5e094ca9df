"""Property tests on random QONNX layers (hypothesis).

The models run in float64 with power-of-two scales, so onnx's reference evaluator computes the
integer accumulator exactly: an execution that shares no code with fhe-lint's bound.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qonnx_builder import QonnxBuilder
from reference import run

from fhe_lint.analysis.accumulators import tap_range
from fhe_lint.bounds import window
from fhe_lint.fix import fix_model
from fhe_lint.fix.plan import plan
from fhe_lint.linter import lint_model
from fhe_lint.formats.quantizer import integer_range
from fhe_lint.settings import Settings

SETTINGS = settings(max_examples=int(os.environ.get("FHE_LINT_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layers(draw):
    conv = draw(st.booleans())
    n_out = draw(st.integers(1, 5))
    if conv:
        c_in, k = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        w_shape, x_shape = (n_out, c_in, k, k), (1, c_in, k, k)
    else:
        n_in = draw(st.integers(1, 8))
        w_shape, x_shape = (n_out, n_in), (1, n_in)
    w_bits, x_bits = draw(st.integers(2, 16)), draw(st.integers(1, 16))
    x_signed, narrow = draw(st.booleans()), draw(st.booleans())
    w_grid = integer_range(w_bits, True, narrow)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    per_channel = draw(st.booleans())
    zp = rng.integers(w_grid.lo // 2, w_grid.hi // 2 + 1, size=(n_out,) + (1,) * (len(w_shape) - 1)) \
        if draw(st.booleans()) else np.zeros((n_out,) + (1,) * (len(w_shape) - 1), dtype=np.int64)
    q = rng.integers(w_grid.lo, w_grid.hi + 1, size=w_shape)
    q = np.where(rng.random(w_shape) < 0.2, zp, q)  # some weights exactly at the zero-point
    exps = rng.integers(-6, 1, size=(n_out,) + (1,) * (len(w_shape) - 1)) if per_channel else np.array(-3)
    s_w = 2.0 ** exps
    return dict(conv=conv, q=q, zp=zp, s_w=s_w, w_bits=w_bits, narrow=narrow, x_bits=x_bits,
                x_signed=x_signed, x_shape=x_shape)


def build(p):
    b = QonnxBuilder(np.float64)
    x = b.quant(b.input(list(p["x_shape"])), 0.5, p["x_bits"], signed=p["x_signed"])
    w = (p["q"] - p["zp"]) * p["s_w"]
    scale = p["s_w"] if p["s_w"].ndim else float(p["s_w"])
    wq = b.quant(b.const(w), scale, p["w_bits"], narrow=p["narrow"], zero_point=p["zp"].astype(np.float64))
    if p["conv"]:
        k = p["q"].shape[-1]
        return b.build(b.node("Conv", [x, wq], name="layer", kernel_shape=[k, k]))
    return b.build(b.node("Gemm", [x, wq], name="layer", transB=1))


def accumulators(model, p, x_int: np.ndarray) -> np.ndarray:
    out = run(model, (x_int * 0.5).reshape(p["x_shape"])).ravel()
    s = np.broadcast_to(np.asarray(p["s_w"], dtype=np.float64).ravel(), out.shape)
    return np.round(out / (0.5 * s)).astype(np.int64)


@SETTINGS
@given(layers())
def test_interval_contains_every_value_and_is_attained(p):
    model = build(p)
    (la,) = lint_model(model, Path("p.onnx"), Settings()).analysis.layers
    grid = integer_range(p["x_bits"], p["x_signed"], False)
    d = (p["q"] - p["zp"]).reshape(p["q"].shape[0], -1)
    for k in range(d.shape[0]):
        top = accumulators(model, p, np.where(d[k] > 0, grid.hi, grid.lo))
        bottom = accumulators(model, p, np.where(d[k] > 0, grid.lo, grid.hi))
        assert (top[k], bottom[k]) == (int(la.bounds.hi[k]), int(la.bounds.lo[k]))
    rng = np.random.default_rng(0)
    for _ in range(5):
        acc = accumulators(model, p, rng.integers(grid.lo, grid.hi + 1, size=d.shape[1]))
        assert ((la.bounds.lo <= acc) & (acc <= la.bounds.hi)).all()


@SETTINGS
@given(layers(), st.integers(4, 20))
def test_fix_properties(p, n_max):
    model = build(p)
    settings_ = Settings(n_max=n_max, max_prune=100.0, max_damage=100.0)
    before = lint_model(model, Path("p.onnx"), settings_)
    outcome = fix_model(before)
    (la0,) = before.analysis.layers
    violating = set(np.flatnonzero(la0.bounds.bits > n_max))
    if la0.bounds.omega < 1:  # FHE003: the bit-widths themselves are the problem
        assert outcome.fixed is None and ("FHE003" in (outcome.summary.refused or "")) == bool(violating) \
            or not violating
        return
    if not violating:
        assert outcome.fixed is None and outcome.summary.pruned == {}
        return
    assert outcome.summary.refused is None and outcome.fixed is not None
    (la1,) = lint_model(outcome.fixed.model, Path("p.onnx"), settings_).analysis.layers
    d0, d1 = la0.layer.weight.d, la1.layer.weight.d
    changed = d0 != d1
    assert set(np.flatnonzero(changed.any(axis=1))) <= violating  # only violating neurons change
    assert (d1[changed] == 0).all()  # they only lose weights
    assert (la1.bounds.bits <= n_max).all()  # the result passes
    again = fix_model(lint_model(outcome.fixed.model, Path("p.onnx"), settings_))
    assert again.fixed is None and again.summary.pruned == {}  # fixing again changes nothing


def _reference_plan(la, n_max: int) -> set[int]:
    """The L1 rule, one tap at a time: in each violating neuron, drop non-zero taps by increasing
    float32 |w| (ties by column) until the exact interval fits ``n_max`` bits."""
    weight, x = la.layer.weight, tap_range(la.layer)
    d, magnitude, index = weight.d, weight.magnitude(), weight.source_index()
    low, high = window(n_max, la.bounds.signed)
    out = set()
    for k in np.flatnonzero(la.bounds.bits > n_max):
        lo, hi = int(la.bounds.lo[k]), int(la.bounds.hi[k])
        for j in sorted(np.flatnonzero(d[k]), key=lambda j: (magnitude[k, j], j)):
            if low <= lo and hi <= high:
                break
            terms = (int(d[k, j]) * x.lo, int(d[k, j]) * x.hi)
            lo, hi = lo - min(terms), hi - max(terms)
            out.add(int(index[k, j]))
    return out


@SETTINGS
@given(layers(), st.integers(4, 20))
def test_fix_plan_is_the_l1_rule_one_tap_at_a_time(p, n_max):
    result = lint_model(build(p), Path("p.onnx"), Settings(n_max=n_max, max_prune=100.0))
    (la,) = result.analysis.layers
    prunes = plan(result.analysis, result.diagnostics)
    assert {int(i) for p_ in prunes for i in np.flatnonzero(p_.mask())} == _reference_plan(la, n_max)
