"""What every format comes down to: an integer grid and how a quantizer maps floats onto it.

Concrete ML encrypts a quantizer's integers ``q`` themselves, so a quantizer's raw integer range
is what a consumer sees, whatever its zero-point. The format adapters (``qonnx``, ``qdq``,
``qoperator``, ``float_model``) each read their own ops into these types.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.formats.graph import Graph, optional_input
from fhe_lint.io.onnx_proto import NodeProto

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


@dataclass(frozen=True)
class InputRange:
    """The integers a layer input can hold, and the quantizers they come from."""

    range: IntRange
    bits: int
    quantizers: tuple[str, ...]
    scale_zero_point: tuple[float, float] | None = None  # per-tensor: float value -> its integer


def scalar_params(graph: Graph, node: NodeProto) -> tuple[float, float] | None:
    """A quantizer's per-tensor (scale, zero-point) from its inputs 1 and 2, if constant scalars."""
    names = [optional_input(node, i) for i in (1, 2)]
    values = [graph.const(n) if n and graph.is_const(n) else (None if n else np.zeros(())) for n in names]
    if any(v is None or v.size != 1 for v in values):
        return None
    return float(values[0].ravel()[0]), float(values[1].ravel()[0])


def const_param(graph: Graph, node: NodeProto, index: int, what: str, required: bool = True) -> np.ndarray | None:
    """A quantizer's scale or zero-point input as float64: None when the input is absent, or is
    computed at run time and not ``required``; NaN, Inf or non-numeric values are refused."""
    name = optional_input(node, index)
    if not name or not graph.is_const(name):
        if name and required:
            raise UnsupportedModelError(f"{graph.name(node)}: {what} is not a constant")
        return None
    value = graph.const(name)
    if not np.issubdtype(value.dtype, np.number) or not np.isfinite(value.astype(np.float64)).all():
        raise UnsupportedModelError(f"{graph.name(node)}: {what} has NaN, Inf or non-numeric values")
    return value.astype(np.float64)


def scalar_zero_point(graph: Graph, name: str) -> int | None:
    """A zero-point input's value when it is one per tensor (0 when absent); None per axis."""
    zp = graph.const(name) if name and graph.is_const(name) else np.zeros(())
    return int(zp.ravel()[0]) if zp.size == 1 else None


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


def integer_range(bits: int, signed: bool, narrow: bool) -> IntRange:
    if signed:
        return IntRange(-(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1)
    return IntRange(0, 2**bits - 1 - int(narrow))
