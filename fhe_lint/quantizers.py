"""Quantizer semantics: the integer grid a quantizer produces and how it maps floats onto it.

QONNX ``Quant(x, scale, zero_point, bitwidth; signed, narrow, rounding_mode)`` computes
``q = clip(round(x / scale + zero_point), qmin, qmax)`` and outputs ``(q - zero_point) * scale``;
``BipolarQuant(x, scale)`` outputs ``sign(x) * scale`` with ``sign(0) = +1``.
Concrete ML encrypts ``q`` itself, so a quantizer's raw integer range is what a consumer sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.graph import Graph, attr
from fhe_lint.io.onnx_proto import NodeProto
from fhe_lint.ops import QONNX_DOMAINS

MAX_BITS = 32


@dataclass(frozen=True)
class IntRange:
    lo: int
    hi: int

    def union(self, other: IntRange) -> IntRange:
        return IntRange(min(self.lo, other.lo), max(self.hi, other.hi))

    def with_zero(self) -> IntRange:
        """The range once zero padding can also appear among the values."""
        return IntRange(min(self.lo, 0), max(self.hi, 0))


@dataclass(frozen=True)
class Quantizer:
    """A quantizer node's integer grid; ``scale``/``zero_point`` broadcast against its input."""

    node: str
    bits: int
    range: IntRange
    scale: np.ndarray
    zero_point: np.ndarray
    rounding: str
    integer_source: bool = False  # the source already holds q (QDQ/QOperator int initializers)

    def pruned_values(self, shape: tuple[int, ...]) -> np.ndarray:
        """Source values that add nothing: float 0.0 quantizes to the zero-point; an integer
        source must hold the zero-point itself."""
        if self.integer_source:
            return np.broadcast_to(self.zero_point, shape)
        return np.zeros(shape)

    def levels(self, x: np.ndarray, done: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """``q - zero_point`` for float ``x``: what a weight adds per unit of input.

        Computed block by block in float64 (the rounding must match float64 reference
        implementations at ties) into the narrowest integer type that holds it, so memory stays
        near the size of the weights; ``done`` is told each block of ``x`` it has finished with.
        """
        zp = self.zero_point
        lo, hi = self.range.lo - float(zp.max(initial=0)), self.range.hi - float(zp.min(initial=0))
        dtype = next((t for t in (np.int8, np.int16, np.int32, np.int64)
                      if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max), None)
        if dtype is None:
            raise UnsupportedModelError(f"{self.node}: zero-point {float(zp.max(initial=0)):g} is far outside "
                                        f"the {self.bits}-bit grid")
        out = np.empty(x.shape, dtype)
        scale, zp = np.broadcast_to(self.scale, x.shape), np.broadcast_to(self.zero_point, x.shape)
        if x.ndim == 0:
            out[...] = self._levels_block(x, scale, zp)
            return out
        step = max(1, _BLOCK // max(1, x[0].size))
        for i in range(0, x.shape[0], step):
            out[i:i + step] = self._levels_block(x[i:i + step], scale[i:i + step], zp[i:i + step])
            if done is not None:
                done(x[i:i + step])
        return out

    def _levels_block(self, x: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):  # NaN in a narrow float type: refused just below
            y = x.astype(np.float64)  # one temporary, then everything in place
        if not np.isfinite(y.sum()) and not np.isfinite(y).all():  # a sum of finite float32s cannot overflow
            raise UnsupportedModelError(f"{self.node}: weight has NaN, Inf or non-numeric values")
        if self.integer_source:
            return np.subtract(y, zp, out=y)
        shifted = bool(zp.any())
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            np.divide(y, scale, out=y)
            if shifted:
                np.add(y, zp, out=y)
        if self.rounding == "BIPOLAR":
            return np.where(y >= 0, 1.0, -1.0)
        ROUNDING[self.rounding](y, out=y)
        np.clip(y, self.range.lo, self.range.hi, out=y)
        if shifted:
            np.subtract(y, zp, out=y)
        return y


_BLOCK = 1 << 16  # elements per float64 block: 512 KiB of temporaries, which stay in cache


def symmetric(bits: int, weights: np.ndarray, node: str) -> Quantizer:
    """Concrete ML's post-training weight quantizer: symmetric, per tensor, ``bits`` bits."""
    grid = integer_range(bits, signed=True, narrow=True)
    peak = float(np.abs(weights).max(initial=0.0))
    scale = np.array(peak / grid.hi if peak > 0 and grid.hi > 0 else 1.0)
    return Quantizer(node, bits, grid, scale, np.zeros(()), "ROUND")


def _half_up(y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.floor(np.add(y, 0.5, out=out), out=out)


def _half_down(y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.ceil(np.subtract(y, 0.5, out=out), out=out)


def _up(y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Away from zero."""
    return np.copysign(np.ceil(np.abs(y)), y, out=out)


# Each takes ``out=`` like a numpy ufunc, so whole blocks round in place.
ROUNDING: dict[str, Callable[..., np.ndarray]] = {
    "ROUND": np.rint,  # half to even, as qonnx and torch.round
    "HALF_EVEN": np.rint,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "ROUND_TO_ZERO": np.trunc,
    "DOWN": np.trunc,
    "UP": _up,
    "HALF_UP": _half_up,
    "HALF_DOWN": _half_down,
}


def is_qonnx_quant(node: NodeProto) -> bool:
    return node.domain in QONNX_DOMAINS and node.op_type in ("Quant", "BipolarQuant")


def integer_range(bits: int, signed: bool, narrow: bool) -> IntRange:
    if signed:
        return IntRange(-(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1)
    return IntRange(0, 2**bits - 1 - int(narrow))


def _scalar_int(graph: Graph, node: NodeProto, index: int, what: str) -> int:
    where = f"{graph.name(node)}"
    if len(node.input) <= index or not graph.is_const(node.input[index]):
        raise UnsupportedModelError(f"{where}: {what} is not a constant")
    value = graph.const(node.input[index])
    if (value.size != 1 or not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all()
            or float(value.flat[0]) != int(value.flat[0])):
        raise UnsupportedModelError(f"{where}: {what} must be one integer, got {value.ravel()[:4].tolist()}")
    return int(value.flat[0])


def _param(graph: Graph, node: NodeProto, index: int, what: str, need_const: bool) -> np.ndarray | None:
    """A scale or zero-point; only a weight quantizer needs its value (activations need bits only)."""
    name = node.input[index] if len(node.input) > index else ""
    if not name or not graph.is_const(name):
        if need_const:
            raise UnsupportedModelError(f"{graph.name(node)}: {what} is not a constant")
        return None
    value = graph.const(name)
    if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value).all():
        raise UnsupportedModelError(f"{graph.name(node)}: {what} has NaN, Inf or non-numeric values")
    return value.astype(np.float64)


def parse_quant(graph: Graph, node: NodeProto, need_params: bool) -> Quantizer:
    """Read a QONNX quantizer, validating every attribute that changes its integer grid."""
    name = graph.name(node)
    scale = _param(graph, node, 1, "scale", need_params)
    if scale is not None and (scale <= 0).any():
        raise UnsupportedModelError(f"{name}: scale must be positive")
    scale = np.ones(()) if scale is None else scale
    if node.op_type == "BipolarQuant":
        return Quantizer(name, 1, IntRange(-1, 1), scale, np.zeros(()), "BIPOLAR")
    zero_point = _param(graph, node, 2, "zero-point", need_params)
    zero_point = np.zeros(()) if zero_point is None else zero_point
    if (zero_point != np.round(zero_point)).any():
        raise UnsupportedModelError(f"{name}: zero-point must be integer-valued")
    bits = _scalar_int(graph, node, 3, "bit-width")
    if not 1 <= bits <= MAX_BITS:
        raise UnsupportedModelError(f"{name}: bit-width {bits} is outside 1..{MAX_BITS}")
    signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
    rounding = str(attr(node, "rounding_mode", "ROUND"))
    if rounding.upper() not in ROUNDING:
        raise UnsupportedModelError(f"{name}: unsupported rounding_mode {rounding!r}")
    grid = integer_range(bits, signed, narrow)
    if grid.lo > grid.hi:
        raise UnsupportedModelError(f"{name}: a {bits}-bit narrow quantizer has no values")
    return Quantizer(name, bits, grid, scale, zero_point, rounding.upper())

