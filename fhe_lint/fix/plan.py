"""Which weights to zero: a plan, pure, from the requirements the rules' diagnostics carry.

In each neuron a kept, failing, fixable diagnostic names, the plan removes the smallest-magnitude
non-zero weights, as few as needed: FHE001 (the exact bound within its limit) and, with
``--strict``, FHE002 (at most its budget of non-zeros). It never re-derives what violates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from fhe_lint import bounds
from fhe_lint.analysis.accumulators import LayerAnalysis, ModelAnalysis, tap_range
from fhe_lint.diagnostics import Diagnostic, Requirement
from fhe_lint.fix.edits import LayerEdit
from fhe_lint.formats.quantizer import IntRange
from fhe_lint.parallel import map_blocks


def requirements(diagnostics: Iterable[Diagnostic], strict: bool) -> dict[str, dict[int, Requirement]]:
    """Per layer and neuron, what the fixable diagnostics that fail the run ask for."""
    out: dict[str, dict[int, Requirement]] = {}
    for d in diagnostics:
        if d.fix is None or not d.fails(strict) or d.node is None or d.neuron is None:
            continue
        neurons = out.setdefault(d.node, {})
        neurons[d.neuron] = neurons[d.neuron].merge(d.fix) if d.neuron in neurons else d.fix
    return out


def needs(neurons: int, wanted: dict[int, Requirement]) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the accumulator bits and the non-zero count it must come within (-1: none)."""
    bits = np.full(neurons, -1, dtype=np.int64)
    limit = np.full(neurons, -1, dtype=np.int64)
    for k, req in wanted.items():
        bits[k] = -1 if req.accumulator_bits is None else req.accumulator_bits
        limit[k] = -1 if req.nonzero is None else req.nonzero
    return bits, limit


@dataclass(frozen=True)
class _Taps:
    """One pruning problem: rows of taps (``(neurons, taps)`` arrays) with their worst case."""

    d: np.ndarray
    magnitude: np.ndarray
    index: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    nonzero: np.ndarray


def plan_layer(la: LayerAnalysis, wanted: dict[int, Requirement], magnitude: np.ndarray) -> LayerEdit | None:
    """The taps to remove so that every neuron in ``wanted`` meets its requirement.

    A strided ConvTranspose sums one phase of a neuron's taps per output, so each phase is
    planned as its own row of taps (the bound is the worst phase); the non-zero budget counts
    every tap of the neuron, so it is planned over the whole row. ``magnitude`` orders the taps
    (``weight.magnitude()``, scaled by activity for ``--fix-order activation``).
    """
    rows = np.array(sorted(wanted), dtype=np.int64)
    if rows.size == 0:
        return None
    weight, b = la.layer.weight, la.bounds
    n = weight.d.shape[0]
    bits, limit = needs(n, wanted)
    index = np.ascontiguousarray(weight.source_index())
    x = tap_range(la.layer)
    whole = _Taps(weight.d, magnitude, index, b.lo, b.hi, b.nonzero)
    phases = la.layer.phases
    mask = np.zeros(weight.source_values.size, dtype=bool)
    if phases is None:
        _plan(whole, x, b.signed, rows, bits, limit, mask)
    else:
        _plan(whole, x, b.signed, rows, np.full(n, -1), limit, mask)
        for phase in np.unique(phases):
            in_phase = phases == phase
            d = weight.d[:, in_phase]
            lo, hi = bounds.accumulator_interval(d, x.lo, x.hi)
            part = _Taps(d, magnitude[:, in_phase], index[:, in_phase], lo, hi, bounds.nonzero_count(d))
            _plan(part, x, b.signed, rows, bits, np.full(n, -1), mask)
    pruned = int(np.count_nonzero(mask))
    return LayerEdit.of(la, mask, pruned=pruned) if pruned else None


def _plan(t: _Taps, x, signed: bool, rows: np.ndarray, bits: np.ndarray, limit: np.ndarray, out: np.ndarray) -> None:
    """Flag in ``out`` (flat, at ``t.index``'s positions) the smallest prefix (by importance) of
    each row's non-zero taps whose removal meets the row's ``bits`` (exact worst case within
    that many bits; -1: no such need) and ``limit`` (at most that many non-zeros; -1: none).

    Removing a tap shrinks both ends of the interval (0 lies in every tap's range), so the
    bits needed never grow along the prefix: the prefix lengths that do not fit come first,
    and counting them gives the cut. Rows are planned in blocks, on every core, so memory stays
    a few weight-sized arrays whatever the layer's size.
    """
    rows = rows[(bits[rows] > 0) | (limit[rows] >= 0)]
    if rows.size == 0:
        return
    n = t.d.shape[1]
    index = t.index.reshape(-1)
    # Each tap is sorted as one uint64: importance bits, then its column, then (int8 levels) its
    # value, so one in-place sort yields the order, the columns and the values at once.
    packed = t.d.dtype == np.int8 and n < 2**24
    columns = np.arange(n, dtype=np.uint64) << np.uint64(8 if packed else 0)
    terms = _term_table(x.lo, x.hi, n) if packed else None
    step = max(1, _BLOCK // max(n, 1))

    def plan_rows(r: np.ndarray) -> None:  # blocks flag distinct positions: no two write one byte
        d = t.d[r]
        # zero taps first (key 0), then by importance: +1 keeps a tap of importance 0 after them
        key = np.where(d == 0, np.uint32(0), t.magnitude[r].view(np.uint32) + np.uint32(1)).astype(np.uint64)
        key <<= np.uint64(32)
        key |= columns
        if packed:
            key |= d.view(np.uint8)
        key.sort(axis=1)
        if packed:
            value = key.astype(np.uint8)
            raises_lo, lowers_hi = np.take(terms[0], value), np.take(terms[1], value)
        else:
            t_lo, t_hi = bounds.term_extremes(np.take_along_axis(d, (key & _LOW32).astype(np.intp), axis=1), x.lo, x.hi)
            raises_lo, lowers_hi = -t_lo, t_hi
        need_bits = bits[r] > 0
        low, high = bounds.window(np.maximum(bits[r], 1), signed)  # rows without a limit: masked just below
        # taps to remove: enough of the prefix for each end to come within limits
        cut = np.maximum(
            _prefix_reaching(np.cumsum(lowers_hi, axis=1, dtype=lowers_hi.dtype), np.where(need_bits, t.hi[r] - high, 0)),
            _prefix_reaching(np.cumsum(raises_lo, axis=1, dtype=raises_lo.dtype), np.where(need_bits, low - t.lo[r], 0)))
        cut = np.maximum(cut, _prefix_reaching(np.cumsum(key >= np.uint64(1 << 32), axis=1),
                                               np.where(limit[r] >= 0, t.nonzero[r] - limit[r], 0)))
        first = n - t.nonzero[r]  # the zero taps, sorted first, need no removing
        slot = np.arange(n)
        dropped = key[(slot >= first[:, None]) & (slot < cut[:, None])]
        position = ((dropped >> np.uint64(8)) & _COLUMN if packed else dropped & _LOW32).astype(np.intp)
        position += np.repeat(r * n, np.maximum(cut - first, 0))
        out[np.take(index, position)] = True

    map_blocks(plan_rows, [rows[i:i + step] for i in range(0, rows.size, step)])


_BLOCK = 1 << 16  # taps planned at once: sort and prefix sums stay in cache
_LOW32, _COLUMN = np.uint64(2**32 - 1), np.uint64(2**24 - 1)


def _term_table(x_lo: int, x_hi: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every int8 tap value ``d``, indexed by its byte (``d.view(np.uint8)``): how much removing
    the tap raises the interval's low end (``-min(d * x)``) and lowers its high end
    (``max(d * x)``), both >= 0, in a type whose sums over ``n`` taps cannot wrap."""
    t_lo, t_hi = bounds.term_extremes(np.arange(256, dtype=np.uint8).view(np.int8), x_lo, x_hi, taps=n)
    return -t_lo, t_hi


def _prefix_reaching(cumulative: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Per row, the shortest prefix whose (non-decreasing) ``cumulative`` sum reaches ``need``."""
    if cumulative.dtype != object:  # a need past what the sums can hold is out of reach anyway
        need = np.clip(need, 0, np.iinfo(cumulative.dtype).max)
    need = need.astype(cumulative.dtype)[:, None]
    return np.where(need[:, 0] > 0, 1 + np.count_nonzero(cumulative < need, axis=1), 0)


def prune_to_fit(d: np.ndarray, magnitude: np.ndarray, x: IntRange, n_max: int) -> np.ndarray:
    """Flat positions (row-major in ``d``) whose zeroing makes every row's exact worst case fit
    ``n_max`` bits: ``--fix``'s L1 rule on bare arrays, for the training guard."""
    lo, hi = bounds.accumulator_interval(d, x.lo, x.hi)
    bits, signed = bounds.layer_bits(lo, hi)
    rows = np.flatnonzero(bits > n_max)
    n = d.shape[0]
    index = np.arange(d.size, dtype=np.int64).reshape(d.shape)
    taps = _Taps(d, magnitude.astype(np.float32), index, lo, hi, bounds.nonzero_count(d))
    mask = np.zeros(d.size, dtype=bool)
    _plan(taps, x, signed, rows, np.full(n, n_max, dtype=np.int64), np.full(n, -1, dtype=np.int64), mask)
    return np.flatnonzero(mask)


def plan(analysis: ModelAnalysis, diagnostics: Iterable[Diagnostic],
         activity: dict[str, np.ndarray] | None = None) -> list[LayerEdit]:
    """The pruning that satisfies every requirement of ``diagnostics`` that fails the run."""
    wanted = requirements(diagnostics, analysis.settings.strict)
    out = []
    for la in analysis.layers:
        if la.name in wanted:
            magnitude = la.layer.weight.magnitude()
            analysis.graph.evict()  # the weights' pages: read again only by the fix's edit
            if activity is not None and la.name in activity:
                magnitude = (magnitude * activity[la.name]).astype(np.float32)
            p = plan_layer(la, wanted[la.name], magnitude)
            if p is not None:
                out.append(p)
    return out
