"""Per-neuron L1-unstructured pruning: which weights to zero (a plan, pure) and how (a new model).

A plan satisfies exactly the requirements carried by the diagnostics that fail the run and
survived select, ignore and suppressions (FHE001: the exact bound within its limit; with
``--strict``, FHE002: at most its budget of non-zeros): in each such neuron only, it removes the
smallest-magnitude non-zero weights, as few as needed. Applying a plan changes only the float
weights behind the quantizers, on a copy of the model; a weight path shared with a layer that is
not being fixed is cloned first, so no other layer changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from fhe_lint import bounds
from fhe_lint.analysis import LayerAnalysis, ModelAnalysis, tap_range
from fhe_lint.diagnostics import Diagnostic, Requirement
from fhe_lint.errors import FixError
from fhe_lint.graph import Graph
from fhe_lint.linter import LintResult, lint_model
from fhe_lint.onnx_proto import ModelProto, NodeProto, TensorProto, from_array
from fhe_lint.parallel import map_blocks


@dataclass(frozen=True)
class LayerPrune:
    """Taps to zero in one layer: positions in the source initializer."""

    layer: LayerAnalysis
    source_index: np.ndarray  # flat index into the float weight initializer

    @property
    def count(self) -> int:
        return int(self.source_index.size)

    @property
    def fraction(self) -> float:
        return self.count / max(self.layer.layer.weight.d.size, 1)


def requirements(diagnostics: Iterable[Diagnostic], strict: bool) -> dict[str, dict[int, Requirement]]:
    """Per layer and neuron, what the fixable diagnostics that fail the run ask for."""
    out: dict[str, dict[int, Requirement]] = {}
    for d in diagnostics:
        if d.fix is None or not d.fails(strict) or d.node is None or d.neuron is None:
            continue
        neurons = out.setdefault(d.node, {})
        neurons[d.neuron] = neurons[d.neuron].merge(d.fix) if d.neuron in neurons else d.fix
    return out


@dataclass(frozen=True)
class _Taps:
    """One pruning problem: rows of taps (``(neurons, taps)`` arrays) with their worst case."""

    d: np.ndarray
    magnitude: np.ndarray
    index: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    nonzero: np.ndarray


def plan_layer(la: LayerAnalysis, wanted: dict[int, Requirement],
               activity: np.ndarray | None = None) -> LayerPrune | None:
    """The taps to remove so that every neuron in ``wanted`` meets its requirement.

    A strided ConvTranspose sums one phase of a neuron's taps per output, so each phase is
    planned as its own row of taps (the bound is the worst phase); the non-zero budget counts
    every tap of the neuron, so it is planned over the whole row.
    """
    rows = np.array(sorted(wanted), dtype=np.int64)
    if rows.size == 0:
        return None
    weight, b = la.layer.weight, la.bounds
    n = weight.d.shape[0]
    bits = np.full(n, -1, dtype=np.int64)
    limit = np.full(n, -1, dtype=np.int64)
    for k, req in wanted.items():
        bits[k] = -1 if req.accumulator_bits is None else req.accumulator_bits
        limit[k] = -1 if req.nonzero is None else req.nonzero
    magnitude = weight.magnitude()
    index = np.ascontiguousarray(weight.source_index())
    x = tap_range(la.layer)
    if activity is not None:
        magnitude = (magnitude * activity).astype(np.float32)
    whole = _Taps(weight.d, magnitude, index, b.lo, b.hi, b.nonzero)
    phases = la.layer.phases
    if phases is None:
        found = [_plan(whole, x, b.signed, rows, bits, limit)]
    else:
        found = [_plan(whole, x, b.signed, rows, np.full(n, -1), limit)]
        for phase in np.unique(phases):
            mask = phases == phase
            d = weight.d[:, mask]
            lo, hi = bounds.accumulator_interval(d, x.lo, x.hi)
            part = _Taps(d, magnitude[:, mask], index[:, mask], lo, hi, bounds.nonzero_count(d))
            found.append(_plan(part, x, b.signed, rows, bits, np.full(n, -1)))
    taps = np.unique(np.concatenate(found)) if len(found) > 1 else found[0]
    return LayerPrune(la, taps) if taps.size else None


def _plan(t: _Taps, x, signed: bool, rows: np.ndarray, bits: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Smallest prefix (by importance) of each row's non-zero taps whose removal meets the row's
    ``bits`` (exact worst case within that many bits; -1: no such need) and ``limit`` (at most
    that many non-zeros; -1: none).

    Removing a tap shrinks both ends of the interval (0 lies in every tap's range), so the
    bits needed never grow along the prefix: the prefix lengths that do not fit come first,
    and counting them gives the cut. Rows are planned in blocks, on every core, so memory stays
    a few weight-sized arrays whatever the layer's size.
    """
    rows = rows[(bits[rows] > 0) | (limit[rows] >= 0)]
    if rows.size == 0:
        return np.zeros(0, dtype=np.intp)
    n = t.d.shape[1]
    index = t.index.reshape(-1)
    # Each tap is sorted as one uint64: importance bits, then its column, then (int8 levels) its
    # value, so one in-place sort yields the order, the columns and the values at once.
    packed = t.d.dtype == np.int8 and n < 2**24
    columns = np.arange(n, dtype=np.uint64) << np.uint64(8 if packed else 0)
    terms = _term_table(x.lo, x.hi, n) if packed else None
    step = max(1, _BLOCK // max(n, 1))

    def plan_rows(r: np.ndarray) -> np.ndarray:
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
        low, high = _windows(bits[r], signed)
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
        return np.take(index, position)

    blocks = [rows[i:i + step] for i in range(0, rows.size, step)]
    return np.concatenate(map_blocks(plan_rows, blocks))


_BLOCK = 1 << 16  # taps planned at once: sort and prefix sums stay in cache
_LOW32, _COLUMN = np.uint64(2**32 - 1), np.uint64(2**24 - 1)


def _windows(bits: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row, :func:`bounds.window` of its bit limit (rows without one get any finite window),
    in int64 unless a limit past 62 bits needs Python integers."""
    b = np.maximum(bits, 1)
    if b.max(initial=1) > 62:
        b = b.astype(object)
    one = b.dtype.type(1) if b.dtype != object else 1
    if signed:
        return -(one << (b - 1)), (one << (b - 1)) - 1
    return np.zeros_like(b), (one << b) - 1


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


def plan(analysis: ModelAnalysis, diagnostics: Iterable[Diagnostic],
         activity: dict[str, np.ndarray] | None = None) -> list[LayerPrune]:
    """The pruning that satisfies every requirement of ``diagnostics`` that fails the run."""
    wanted = requirements(diagnostics, analysis.settings.strict)
    out = []
    for la in analysis.layers:
        if la.name in wanted:
            p = plan_layer(la, wanted[la.name], (activity or {}).get(la.name))
            if p is not None:
                out.append(p)
    return out


# --- applying a plan to a copy of the model ---


def _unique(name: str, taken: set[str]) -> str:
    k, candidate = 1, f"{name}_pruned"
    while candidate in taken:
        k += 1
        candidate = f"{name}_pruned{k}"
    taken.add(candidate)
    return candidate


def _is_shared(graph: Graph, la: LayerAnalysis) -> bool:
    """Whether any tensor on the weight path also feeds something outside this layer's path."""
    path = [*la.layer.weight.path, la.layer.node]
    feeds = [la.layer.weight.source] + [n.output[0] for n in path[:-1]]
    return not graph.is_initializer(la.layer.weight.source) or any(
        len(graph.consumers[t]) != 1 or graph.consumers[t][0] is not consumer
        for t, consumer in zip(feeds, path)
    )


def _pruned_weights(graph: Graph, p: LayerPrune) -> np.ndarray:
    weight = p.layer.layer.weight
    w = graph.const(weight.source).copy()
    flat, q = w.reshape(-1), weight.quantizer
    # the quantizer as it applies to the pruned positions alone: only those are set and checked
    params = [v.reshape(()) if v.size == 1 else np.broadcast_to(v, w.shape)[np.unravel_index(p.source_index, w.shape)]
              for v in (q.scale, q.zero_point)]
    pruned = replace(q, scale=params[0], zero_point=params[1])
    # one value (and one check) when the parameters are scalars, else one per pruned position
    values = pruned.pruned_values(np.broadcast_shapes(*(v.shape for v in params)))
    flat[p.source_index] = values
    if pruned.levels(values).any():
        raise FixError(
            f"{p.layer.name}: the weight zero-point lies outside the quantizer's range; "
            "a weight cannot be made to add nothing"
        )
    return w


def apply(graph: Graph, prunes: list[LayerPrune]) -> tuple[ModelProto, frozenset[str]]:
    """A copy of the graph's model with the planned weights zeroed, and the initializers changed
    in place; nothing else changes."""
    fixed = ModelProto()
    fixed.CopyFrom(graph.model)
    g = fixed.graph
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {n.name for n in g.node}
    inits = {t.name: t for t in g.initializer}
    touched = set()
    for p in prunes:
        la, weight = p.layer, p.layer.layer.weight
        values = _pruned_weights(graph, p)
        original = graph.const_proto(weight.source)
        if not _is_shared(graph, la):
            inits[weight.source].CopyFrom(_tensor(values, weight.source, original))
            touched.add(weight.source)
            continue
        # Clone initializer and weight path for this layer alone, then rewire the layer.
        tensor = _unique(weight.source, taken)
        g.initializer.append(_tensor(values, tensor, original))
        for node in weight.path:
            clone = NodeProto()
            clone.CopyFrom(node)
            clone.name = _unique(node.name or node.op_type, taken)
            clone.input[0] = tensor
            tensor = _unique(node.output[0], taken)
            clone.output[0] = tensor
            g.node.insert(len(g.node), clone)
        layer_node = g.node[index[id(la.layer.node)]]
        original_out = weight.path[-1].output[0] if weight.path else weight.source
        for i, name in enumerate(layer_node.input):
            if name == original_out:
                layer_node.input[i] = tensor
    _topological_sort(fixed)
    return fixed, frozenset(touched)


def _tensor(values: np.ndarray, name: str, original: TensorProto) -> TensorProto:
    """``values`` stored with the original element type (int4 stays int4, float16 stays float16)."""
    t = from_array(values, original.data_type, name)
    t.doc_string = original.doc_string
    return t


def _topological_sort(model: ModelProto) -> None:
    """Appended clones must precede the layer they feed (ONNX requires topological order)."""
    ordered = Graph(model).topological()
    if [id(n) for n in ordered] != [id(n) for n in model.graph.node]:
        copies = [NodeProto() for _ in ordered]
        for c, n in zip(copies, ordered):
            c.CopyFrom(n)
        del model.graph.node[:]
        model.graph.node.extend(copies)


# --- the whole fix of one model: plan, apply, re-lint, accept or refuse ---


@dataclass(frozen=True)
class FixOutcome:
    """What a fix did. ``model`` is the fixed model to write, None when nothing is written."""

    result: LintResult
    model: ModelProto | None
    pruned: dict[str, int]
    refused: str | None = None
    agreement: float | None = None  # share of calibration inputs whose predicted class is unchanged
    max_abs_change: float | None = None
    touched: frozenset[str] = frozenset()  # initializers changed in place (a copy gets a new name)


def impact(model: Graph, fixed: Graph, data: np.ndarray) -> tuple[float, float]:
    """Prediction agreement (argmax of the first output) and the largest output change."""
    from fhe_lint.execute import evaluate

    name = model.model.graph.output[0].name
    (before,), (after,) = evaluate(model.standalone(), data, [name]), evaluate(fixed.standalone(), data, [name])
    before, after = before.reshape(len(data), -1), after.reshape(len(data), -1)
    agreement = float(np.mean(before.argmax(axis=1) == after.argmax(axis=1)))
    return agreement, float(np.abs(after.astype(np.float64) - before).max(initial=0.0))


def _blocking(result: LintResult) -> str | None:
    """Why no pruning can make this model pass: a failing finding that carries no fix."""
    blocked = [d for d in result.diagnostics if d.fails(result.analysis.settings.strict) and d.fix is None]
    if not blocked:
        return None
    d = blocked[0]
    where = f"{d.node}[neuron {d.neuron}]" if d.neuron is not None else (d.node or "the model")
    more = f" (and {len(blocked) - 1} more finding(s) no fix can resolve)" if len(blocked) > 1 else ""
    return f"pruning cannot fix {d.code} at {where}: {d.message}{more}"


def fix_model(result: LintResult, data: np.ndarray | None = None) -> FixOutcome:
    s = result.analysis.settings
    blocked = _blocking(result)
    if blocked is not None:
        return FixOutcome(result, None, {}, blocked)
    activity = None
    if s.fix_order == "activation":
        if data is None:
            raise FixError("--fix-order activation needs --calibration data")
        from fhe_lint.calibration import tap_activity

        activity = tap_activity(result.analysis, data)
    prunes = plan(result.analysis, result.diagnostics, activity)
    pruned = {p.layer.name: p.count for p in prunes}
    if not prunes:
        return FixOutcome(result, None, {})
    for p in prunes:
        if p.fraction > s.max_prune:
            from fhe_lint.advice import bit_advice

            advice = bit_advice(p.layer, s.n_max).text(p.layer.layer.weight.bits, p.layer.layer.input.bits)
            return FixOutcome(result, None, pruned, (
                f"fixing {p.layer.name} would prune {p.fraction:.0%} of its weights "
                f"(more than --max-prune {s.max_prune:.0%}); lower its bit-widths instead: {advice}"
            ))
    graph = result.analysis.graph
    fixed, touched = apply(graph, prunes)
    after = lint_model(fixed, result.path, s, graph.data)
    if after.fails(s.strict):
        left = next(d for d in after.diagnostics if d.fails(s.strict))
        return FixOutcome(result, None, pruned, f"the pruned model would still fail: {left.code} at {left.node}: "
                                                f"{left.message}")
    if data is None:
        return FixOutcome(after, fixed, pruned, touched=touched)
    agreement, change = impact(graph, after.analysis.graph, data)
    drop = 100 * (1 - agreement)
    if s.max_agreement_drop is not None and drop > s.max_agreement_drop:
        return FixOutcome(result, None, pruned, (
            f"the fix changes {drop:.2f} % of predictions on the calibration data "
            f"(more than --max-agreement-drop {s.max_agreement_drop:g} %)"
        ), agreement, change)
    return FixOutcome(after, fixed, pruned, None, agreement, change, touched)
