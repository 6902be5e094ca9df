"""How a plan becomes a model: a copy with the planned weights set to values that add nothing.

Only the float (or integer) weights behind the quantizers change; a weight path shared with a
layer that is not being fixed is cloned first, so no other layer changes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis
from fhe_lint.errors import FixError
from fhe_lint.fix.plan import LayerPrune
from fhe_lint.formats.graph import Graph
from fhe_lint.io.onnx_proto import ModelProto, NodeProto, TensorProto, from_array


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
