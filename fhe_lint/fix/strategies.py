"""The strategies beyond L1 pruning, each a list of edits for the violating layers.

``compensate`` re-solves the violating neurons' weights on their grid under the exact bound;
``bits`` puts a violating layer's weights (or its inputs) on the coarser grid the bit-width advice
names, with the same compensating rounding when there is data. A layer a strategy cannot handle
keeps its L1 pruning, so every strategy yields a complete fix or none.
"""

from __future__ import annotations

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis, ModelAnalysis, tap_range
from fhe_lint.analysis.advice import bit_advice
from fhe_lint.diagnostics import Requirement
from fhe_lint.fix import compensate as comp
from fhe_lint.fix.apply import qoperator_scale, bias_input, weight_quantizer
from fhe_lint.fix.edits import LayerEdit, QuantizerEdit
from fhe_lint.fix.plan import needs
from fhe_lint.formats.graph import Graph, attr
from fhe_lint.formats.qonnx import is_qonnx_quant
from fhe_lint.formats.quantizer import integer_range

Wanted = dict[str, dict[int, Requirement]]


def _levels_without(la: LayerAnalysis, prune: LayerEdit | None) -> np.ndarray:
    """The layer's levels with an L1 plan's taps zeroed."""
    d = la.layer.weight.d.astype(np.int64)
    if prune is None:
        return d
    weight = la.layer.weight
    return np.where(weight.layout(prune.mask().reshape(weight.source_values.shape)), 0, d)


def compensate(analysis: ModelAnalysis, wanted: Wanted, prunes: list[LayerEdit], data: np.ndarray) -> list[LayerEdit]:
    """Per violating neuron, the least output error on the data that fits (never more than L1's)."""
    by_layer = {e.layer.name: e for e in prunes}
    layers = [la for la in analysis.layers if la.name in wanted and comp.supported(la)]
    inputs = comp.Inputs(analysis.graph, layers, data) if layers else None
    edits: list[LayerEdit] = []
    for la in analysis.layers:
        if la.name not in wanted:
            continue
        prune = by_layer.get(la.name)
        grid = comp.neuron_grid(la, la.layer.weight.quantizer) if comp.supported(la) else None
        if grid is None:  # L1 pruning stays this layer's fix
            edits += [prune] if prune is not None else []
            continue
        bits, limit = needs(la.layer.neurons, wanted[la.name])
        rows = np.array(sorted(wanted[la.name]), dtype=np.int64)
        d = la.layer.weight.d.astype(np.int64)
        levels, delta = comp.refit(la, rows, inputs.old(la), inputs.new(la, edits), comp.target(la, bits, limit),
                                   *grid, d, _levels_without(la, prune),
                                   bias_input(analysis.graph, la) is not None, tap_range(la.layer))
        edits.append(comp.edit(la, levels, delta, "compensate", analysis.graph))
    return edits


def _weight_option(graph: Graph, la: LayerAnalysis, bits: int) -> QuantizerEdit | None:
    """The weight quantizer at ``bits``, same clipping range: QONNX changes its bit-width, an
    integer container (QDQ, QOperator) keeps its type and uses only the narrower symmetric levels."""
    weight, q = la.layer.weight, la.layer.weight.quantizer
    node = next((n for n in weight.path if is_qonnx_quant(n) and n.op_type == "Quant"), None)
    scale_input = 1
    if node is None and q.integer_source and not q.zero_point.any():
        if weight.path and weight.path[0].op_type == "DequantizeLinear":
            node = weight.path[0]
        elif not weight.path and (at := qoperator_scale(graph, la)) is not None:  # the layer holds the scale
            node, scale_input = la.layer.node, at
    if node is None:
        return None
    peak = max(int(np.abs(weight.d).max(initial=0)), 1)
    top = 2 ** (bits - 1) - 1
    scale = (q.scale * (peak / top)).astype(graph.const(node.input[scale_input]).dtype)  # as the model stores it
    return QuantizerEdit(node, scale, bits if is_qonnx_quant(node) else None, weight.bits, scale_input)


def _input_option(graph: Graph, la: LayerAnalysis, bits: int) -> QuantizerEdit | None:
    """The quantizer that produces the layer's input at ``bits``, keeping its largest value."""
    x = la.layer.input
    if len(x.quantizers) != 1 or x.scale_zero_point is None:
        return None
    node = next((n for n in graph.nodes if graph.name(n) == x.quantizers[0]), None)
    if node is None or not is_qonnx_quant(node) or node.op_type != "Quant" or x.scale_zero_point[1] != 0:
        return None
    signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
    old, new = integer_range(x.bits, signed, narrow), integer_range(bits, signed, narrow)
    if new.hi <= 0:
        return None
    stored = graph.const(node.input[1])
    scale = (stored.astype(np.float64) * (old.hi / new.hi)).astype(stored.dtype)
    return QuantizerEdit(node, scale, bits, x.bits)


def narrow(analysis: ModelAnalysis, wanted: Wanted, prunes: list[LayerEdit], data: np.ndarray | None) -> list[LayerEdit]:
    """Each layer whose exact bound fails at fewer weight or input bits, whichever costs less on
    the data (the weights without data: narrowing an input changes every layer it feeds)."""
    graph, n_max = analysis.graph, analysis.settings.n_max
    by_layer = {e.layer.name: e for e in prunes}
    layers = [la for la in analysis.layers if la.name in wanted and comp.supported(la)]
    inputs = comp.Inputs(graph, layers, data) if data is not None and layers else None
    edits: list[LayerEdit] = []
    for la in analysis.layers:
        if la.name not in wanted:
            continue
        options = []
        if la.prunable and any(r.accumulator_bits is not None for r in wanted[la.name].values()):
            advice = bit_advice(la, n_max)
            options = [e for e in (_narrowed(analysis, la, edits, inputs, weight=advice.max_weight_bits),
                                   _narrowed(analysis, la, edits, inputs, input=advice.max_input_bits)) if e]
        if not options:
            edits += [by_layer[la.name]] if la.name in by_layer else []
            continue
        if inputs is None or len(options) == 1:
            edits.append(options[0])
            continue
        edits.append(min(options, key=lambda e: inputs.output_error([*edits, e])))
    return edits


def _narrowed(analysis: ModelAnalysis, la: LayerAnalysis, earlier: list[LayerEdit], inputs: comp.Inputs | None,
              weight: int | None = None, input: int | None = None) -> LayerEdit | None:
    graph = analysis.graph
    qe = _weight_option(graph, la, weight) if weight else _input_option(graph, la, input) if input else None
    if qe is None:
        return None
    kind = {"weight_quantizer": qe} if weight else {"input_quantizer": qe}
    probe = LayerEdit.at(la, np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.int64), strategy="bits", **kind)
    q = weight_quantizer(probe)
    w, grid = la.layer.weight, comp.neuron_grid(la, q)
    if grid is None:
        return None
    scale, q_min, q_max = grid
    if q.integer_source:  # the container holds the old levels: re-round them onto the new grid
        old = comp.neuron_grid(la, w.quantizer)[0]
        start = np.clip(np.round(w.d * (old / scale)[:, None]), q_min[:, None], q_max[:, None]).astype(np.int64)
    else:  # what the quantizer itself makes of the float weights at its new grid
        start = w.layout(q.levels(w.source_values)).astype(np.int64)
    if inputs is None or not comp.supported(la):
        return comp.edit(la, start, np.zeros(len(start)), "bits", graph, **kind)
    rows = np.arange(la.layer.neurons)
    bits = np.full(len(rows), analysis.settings.n_max)
    target = comp.target(la, bits, np.full(len(rows), -1))
    taps = tap_range(la.layer)
    if weight is None:  # the layer reads coarser inputs on a narrower range; its grid stays
        x_new = inputs.new(la, [*earlier, probe])
        node = qe.node
        new = integer_range(input, bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0)))
        taps = new.with_zero() if la.layer.zero_padded else new
    else:
        x_new = inputs.new(la, earlier)
    levels, delta = comp.refit(la, rows, inputs.old(la), x_new, target, scale, q_min, q_max, start, start,
                               bias_input(graph, la) is not None, taps)
    return comp.edit(la, levels, delta, "bits", graph, **kind)

