"""How edits become a model: a copy with new weight values behind the same quantizers, and,
where an edit says so, new quantizer parameters and biases.

A weight path shared with a layer that is not being fixed is cloned first, and every changed
scale or bit-width is a new initializer (they are shared between quantizers), so nothing that
was not asked to change changes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis
from fhe_lint.errors import FixError
from fhe_lint.fix.edits import LayerEdit, QuantizerEdit
from fhe_lint.formats.graph import Graph, attr
from fhe_lint.formats.quantizer import Quantizer, integer_range
from fhe_lint.io.onnx_proto import ModelProto, NodeProto, TensorProto, from_array


class _Names:
    def __init__(self, model: ModelProto) -> None:
        g = model.graph
        self.taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {n.name for n in g.node}

    def new(self, name: str, suffix: str = "fixed") -> str:
        k, candidate = 1, f"{name}_{suffix}"
        while candidate in self.taken:
            k += 1
            candidate = f"{name}_{suffix}{k}"
        self.taken.add(candidate)
        return candidate


def _is_shared(graph: Graph, la: LayerAnalysis) -> bool:
    """Whether any tensor on the weight path also feeds something outside this layer's path."""
    path = [*la.layer.weight.path, la.layer.node]
    feeds = [la.layer.weight.source] + [n.output[0] for n in path[:-1]]
    return not graph.is_initializer(la.layer.weight.source) or any(
        len(graph.consumers[t]) != 1 or graph.consumers[t][0] is not consumer
        for t, consumer in zip(feeds, path)
    )


def weight_quantizer(e: LayerEdit) -> Quantizer:
    """The weight's quantizer as the edit leaves it."""
    q, qe = e.layer.layer.weight.quantizer, e.weight_quantizer
    if qe is None:
        return q
    node = qe.node
    grid = q.range if qe.bits is None else integer_range(qe.bits, bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0)))
    return replace(q, scale=qe.scale.astype(np.float64), range=grid, bits=qe.bits or q.bits)


def _at(q: Quantizer, shape: tuple[int, ...], index: np.ndarray) -> Quantizer:
    """The quantizer as it applies to some flat positions of its input alone (scalars stay scalars)."""
    params = [v.reshape(()) if v.size == 1 else np.broadcast_to(v, shape)[np.unravel_index(index, shape)]
              for v in (q.scale, q.zero_point)]
    return replace(q, scale=params[0], zero_point=params[1])


def damage(e: LayerEdit) -> float:
    """Share of the layer's weight energy (sum of squared real weights) the edit changes: what a
    fix costs when there is no data to measure it on."""
    weight = e.layer.layer.weight
    source, q = weight.source_values, weight.quantizer
    flat = source.reshape(-1)

    def real(quantizer: Quantizer, index: np.ndarray, levels: np.ndarray | None = None) -> np.ndarray:
        at = _at(quantizer, source.shape, index)
        return (at.levels(flat[index]) if levels is None else levels) * at.scale

    step = 1 << 20
    total = sum(float(np.square(real(q, np.arange(i, min(i + step, flat.size)))).sum())
                for i in range(0, flat.size, step))
    new = np.zeros(e.source_index.size) if e.levels is None else real(weight_quantizer(e), e.source_index, e.levels)
    return float(np.square(new - real(q, e.source_index)).sum()) / max(total, 1e-300)


def _edited_weights(graph: Graph, e: LayerEdit) -> np.ndarray:
    weight = e.layer.layer.weight
    w = graph.const(weight.source).copy()
    flat, q = w.reshape(-1), weight_quantizer(e)
    # the quantizer as it applies to the edited positions alone: only those are set and checked
    at = _at(q, w.shape, e.source_index)
    if e.levels is None:  # one value (and one check) when the parameters are scalars
        values = at.pruned_values(np.broadcast_shapes(np.shape(at.scale), np.shape(at.zero_point)))
        wanted = np.zeros(values.shape, dtype=np.int64)
    else:
        values = e.levels + at.zero_point if q.integer_source else e.levels * at.scale
        wanted = e.levels
    flat[e.source_index] = values
    if (at.levels(flat[e.source_index] if e.levels is not None else values) != wanted).any():
        raise FixError(f"{e.layer.name}: the new weights do not land on the quantizer's grid "
                       "(a weight zero-point outside its range cannot add nothing)")
    return w


def apply(graph: Graph, edits: list[LayerEdit]) -> tuple[ModelProto, frozenset[str]]:
    """A copy of the graph's model with the edits made, and the initializers changed in place."""
    fixed = ModelProto()
    fixed.CopyFrom(graph.model)
    g = fixed.graph
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    names = _Names(fixed)
    inits = {t.name: t for t in g.initializer}
    touched = set()
    for e in edits:
        la, weight = e.layer, e.layer.layer.weight
        path = [g.node[index[id(n)]] for n in weight.path]
        if e.source_index.size == 0:
            pass  # no weight changes: only a quantizer or a bias does
        elif not _is_shared(graph, la):
            values = _edited_weights(graph, e)
            inits[weight.source].CopyFrom(_tensor(values, weight.source, graph.const_proto(weight.source)))
            touched.add(weight.source)
        else:  # clone initializer and weight path for this layer alone, then rewire the layer
            tensor = names.new(weight.source, "pruned")
            g.initializer.append(_tensor(_edited_weights(graph, e), tensor, graph.const_proto(weight.source)))
            clones = []
            for node in weight.path:
                clone = NodeProto()
                clone.CopyFrom(node)
                clone.name = names.new(node.name or node.op_type, "pruned")
                clone.input[0] = tensor
                tensor = names.new(node.output[0], "pruned")
                clone.output[0] = tensor
                g.node.append(clone)
                clones.append(g.node[len(g.node) - 1])
            layer_node = g.node[index[id(la.layer.node)]]
            original_out = weight.path[-1].output[0] if weight.path else weight.source
            for i, name in enumerate(layer_node.input):
                if name == original_out:
                    layer_node.input[i] = tensor
            path = clones
        if e.weight_quantizer is not None:
            _regrid(graph, next(c for c, n in zip(path, weight.path) if n is e.weight_quantizer.node),
                    e.weight_quantizer, names, g)
        if e.input_quantizer is not None:
            _regrid(graph, g.node[index[id(e.input_quantizer.node)]], e.input_quantizer, names, g)
        if e.bias_delta is not None:
            _correct_bias(graph, la, e.bias_delta, inits, touched)
    _drop_orphans(graph.model, fixed)
    _topological_sort(fixed)
    return fixed, frozenset(touched)


def _drop_orphans(original: ModelProto, fixed: ModelProto) -> None:
    """Initializers the edits left unread (a re-gridded quantizer's old scale): onnxruntime warns
    about each. Only ones the original read; none when a subgraph may read outer names."""
    def read(model: ModelProto) -> set[str]:
        return {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}

    if any(a.type in (a.GRAPH, a.GRAPHS) for n in fixed.graph.node for a in n.attribute):
        return
    orphans = read(original) - read(fixed)
    kept = [t for t in fixed.graph.initializer if t.name not in orphans]
    if len(kept) < len(fixed.graph.initializer):
        del fixed.graph.initializer[:]
        fixed.graph.initializer.extend(kept)


def _regrid(graph: Graph, node: NodeProto, q: QuantizerEdit, names: _Names, g) -> None:
    """Point the quantizer at a new scale (input 1) and, for QONNX, bit-width (input 3)."""
    changes = [(1, q.scale)] + ([(3, np.array(q.bits))] if q.bits is not None else [])
    for i, value in changes:
        old = graph.const(node.input[i])
        value = np.asarray(value).reshape(old.shape) if np.size(value) == old.size else np.asarray(value)
        name = names.new(node.input[i])
        g.initializer.append(_tensor(value, name, graph.const_proto(node.input[i])))
        node.input[i] = name


def bias_input(graph: Graph, la: LayerAnalysis) -> str | None:
    """The layer's float bias initializer when a correction can change it for this layer alone."""
    node = la.layer.node
    if la.layer.op not in ("Gemm", "Conv") or len(node.input) < 3 or not graph.is_initializer(node.input[2]):
        return None
    name = node.input[2]
    value = graph.const(name)
    if len(graph.consumers[name]) != 1 or not np.issubdtype(value.dtype, np.floating):
        return None
    return name if value.size in (1, la.layer.neurons) else None


def _correct_bias(graph: Graph, la: LayerAnalysis, delta: np.ndarray, inits: dict, touched: set) -> None:
    name = bias_input(graph, la)
    value = graph.const(name)
    new = (np.broadcast_to(value.reshape(-1), delta.shape) + delta).astype(value.dtype)
    shape = value.shape if value.size == delta.size else delta.shape
    inits[name].CopyFrom(_tensor(new.reshape(shape), name, graph.const_proto(name)))
    touched.add(name)


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
