"""Pure integer math of a linear neuron's accumulator: worst-case interval, bit count, Ω.

All functions take whole layers as 2-D arrays ``(neurons, fan_in)`` and return per-neuron
arrays, so that a model with millions of weights costs a handful of numpy passes. Results are
exact: int64 is used only when the worst case provably fits in it, Python integers otherwise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

_INT64_SAFE = 2**62
# _POW2[i] == 2**i; searchsorted over it is an exact, vectorized int.bit_length for int64.
_POW2 = np.array([1 << i for i in range(63)], dtype=np.int64)


def _exact_dtype(d: np.ndarray, x_lo: int, x_hi: int, taps: int | None = None) -> type | np.dtype:
    """The narrowest of int32, int64 in which no sum of ``taps`` products ``d * x`` (default: along
    the last axis) can wrap, else Python ints (object) for exactness; narrower sums are faster."""
    if d.size == 0:
        return np.int64
    peak = max(-int(d.min(initial=0)), int(d.max(initial=0)))  # no np.abs: abs(int8 -128) wraps
    total = peak * max(abs(x_lo), abs(x_hi)) * max(d.shape[-1] if taps is None else taps, 1)
    return np.int32 if total < 2**31 else np.int64 if total < _INT64_SAFE else object


def term_extremes(d: np.ndarray, x_lo: int, x_hi: int, taps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value of each product ``d * x`` over ``x`` in ``[x_lo, x_hi]``, in a
    type where sums of ``taps`` of them (default: along the last axis) are exact.

    A product is linear in ``x``, so its extremes sit at the interval's ends.
    """
    d = d.astype(_exact_dtype(d, x_lo, x_hi, taps))
    at_lo, at_hi = d * x_lo, d * x_hi
    return np.minimum(at_lo, at_hi), np.maximum(at_lo, at_hi)


def accumulator_interval(d: np.ndarray, x_lo: int, x_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-neuron worst case of ``sum_i d[k, i] * x[i]`` with every ``x[i]`` independent.

    Each tap reads a different input element, so the taps' extremes are reached at once: the
    interval is the sum of the per-tap intervals and it is attained (tight), not just a bound.
    With ``x_lo <= x_hi`` a positive tap peaks at ``x_hi`` and a negative one at ``x_lo``, so two
    reductions (sums of the positive and of the negative taps) give both ends without any
    weight-sized temporary wider than ``d`` itself.
    """
    wide = _exact_dtype(d, 1, 1)  # can the sums of |d| wrap?
    exact = object if wide is object else np.int64  # what the ends are computed in
    pos = np.maximum(d, 0).sum(axis=-1, dtype=wide).astype(exact)
    neg = d.sum(axis=-1, dtype=wide).astype(exact) - pos
    peak = int(np.max(np.abs(np.concatenate([pos, neg])), initial=0)) if pos.size else 0
    if wide is object or 2 * peak * max(abs(x_lo), abs(x_hi)) >= _INT64_SAFE:
        pos, neg = pos.astype(object), neg.astype(object)
    return x_lo * pos + x_hi * neg, x_hi * pos + x_lo * neg


def bit_length(x: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of every non-negative element, exactly."""
    if x.dtype == object:
        return np.array([int(v).bit_length() for v in x.ravel()], dtype=np.int64).reshape(x.shape)
    return np.searchsorted(_POW2, x, side="right").astype(np.int64)


def range_bits(lo: np.ndarray, hi: np.ndarray, signed: bool | None = None) -> np.ndarray:
    """Bits Concrete allots to each integer range ``[lo, hi]`` (DESIGN.md), at least 1.

    Concrete gives a whole tensor one integer type, so a neuron inside a layer is counted as
    signed whenever the layer is (``signed=True``), even if its own range is not negative.
    ``signed=None`` decides per range: unsigned iff ``lo >= 0``.
    """
    lo, hi = np.asarray(lo), np.asarray(hi)
    unsigned = bit_length(np.maximum(hi, 0))
    as_signed = np.maximum(bit_length(np.maximum(-lo - 1, 0)), unsigned) + 1
    is_signed = (lo < 0) if signed is None else np.full(lo.shape, signed)
    return np.maximum(np.where(is_signed, as_signed, unsigned), 1)


def layer_bits(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, bool]:
    """Each neuron's bits in its layer's one integer type, signed if any neuron can go negative."""
    signed = bool((np.asarray(lo) < 0).any()) if np.size(lo) else False
    return range_bits(lo, hi, signed=signed), signed


def window(n_max: int | np.ndarray, signed: bool) -> tuple:
    """The integer range that fits in ``n_max`` bits: ``range_bits(lo, hi, signed) <= n_max``
    exactly when ``low <= lo`` and ``hi <= high``; two comparisons instead of bit lengths.

    ``n_max`` may be an array of limits, one window each (int64, or Python integers past 62 bits).
    """
    if np.ndim(n_max):
        n_max = np.asarray(n_max)
        if n_max.max(initial=1) > 62:
            n_max = n_max.astype(object)
    return (-(2 ** (n_max - 1)), 2 ** (n_max - 1) - 1) if signed else (0 * n_max, 2**n_max - 1)


def int_bits(lo: int, hi: int) -> int:
    """Scalar :func:`range_bits`, for one range such as a layer's union."""
    return int(range_bits(np.array([lo], dtype=object), np.array([hi], dtype=object))[0])


def nonzero_count(d: np.ndarray) -> IntArray:
    """Taps that reach the accumulator: a weight equal to its zero-point adds nothing."""
    return (d != 0).sum(axis=-1, dtype=np.int32 if d.shape[-1] < 2**31 else np.int64).astype(np.int64)


def omega(n_max: int, weight_bits: int, input_bits: int) -> int:
    """Concrete ML's budget of non-zero weights per neuron (pruning doc), possibly 0."""
    return (2**n_max - 1) // ((2**weight_bits - 1) * (2**input_bits - 1))
