"""How edits become a model: a copy with new weight values behind the same quantizers, and,
where an edit says so, new quantizer parameters and biases.

A weight path shared with a layer that is not being fixed is cloned first, and every changed
scale or bit-width is a new initializer (they are shared between quantizers), so nothing that
was not asked to change changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis
from fhe_lint.errors import FixError
from fhe_lint.fix.edits import LayerEdit, QuantizerEdit
from fhe_lint.formats.graph import Graph, attr, optional_input
from fhe_lint.formats.layers import SPECS
from fhe_lint.formats.quantizer import Quantizer, integer_range
from fhe_lint.io.onnx_proto import PLAIN_DTYPES, ModelProto, NodeProto, TensorProto, from_array
from fhe_lint.io.tensor_data import TensorData, is_external


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


def _at(q: Quantizer, shape: tuple[int, ...], index: np.ndarray | slice) -> Quantizer:
    """The quantizer as it applies to some flat positions of its input alone (scalars stay scalars)."""
    def at(v: np.ndarray) -> np.ndarray:
        if v.size == 1:
            return v.reshape(())
        flat = np.arange(index.start, index.stop) if isinstance(index, slice) else index
        return np.broadcast_to(v, shape)[np.unravel_index(flat, shape)]

    return replace(q, scale=at(q.scale), zero_point=at(q.zero_point))


def _chunks(e: LayerEdit) -> Iterator[tuple[slice, np.ndarray, np.ndarray | None]]:
    """The weight's constant in flat chunks: each chunk's slice, the flat positions in it the edit
    changes, and their new levels (None: pruned). Chunked so that no temporary is weight-sized."""
    size, done = e.layer.layer.weight.source_values.size, 0
    for i in range(0, size, _CHUNK):
        part = slice(i, min(i + _CHUNK, size))
        index = i + np.flatnonzero(e.mask(part))
        levels = None if e.levels is None else e.levels[done:done + index.size]
        done += index.size
        yield part, index, levels


_CHUNK = 1 << 18  # a multiple of 8: each chunk's flags start on a byte


def damage(graph: Graph, e: LayerEdit) -> float:
    """Share of the layer's weight energy (sum of squared real weights) the edit changes: what a
    fix costs when there is no data to measure it on."""
    weight = e.layer.layer.weight
    source, q, new_q = weight.source_values, weight.quantizer, weight_quantizer(e)
    flat = source.reshape(-1)
    total = lost = 0.0
    for part, index, levels in _chunks(e):
        at = _at(q, source.shape, part)
        old = at.levels(flat[part]) * at.scale
        graph.release(flat[part])
        total += float(np.square(old).sum())
        if index.size:
            new = 0.0 if levels is None else levels * _at(new_q, source.shape, index).scale
            lost += float(np.square(new - old[index - part.start]).sum())
    return lost / max(total, 1e-300)


def _edited_weights(graph: Graph, e: LayerEdit) -> np.ndarray:
    weight = e.layer.layer.weight
    source = graph.const(weight.source)
    w = np.empty_like(source)
    flat, q = w.reshape(-1), weight_quantizer(e)
    for part, index, levels in _chunks(e):
        flat[part] = source.reshape(-1)[part]
        graph.release(source.reshape(-1)[part])
        if not index.size:
            continue
        at = _at(q, w.shape, index)  # the quantizer at the edited positions alone
        if levels is None:
            flat[index] = at.pruned_values(index.shape)
            wanted = 0
        else:
            flat[index] = levels + at.zero_point if q.integer_source else levels * at.scale
            wanted = levels
        if (at.levels(flat[index]) != wanted).any():
            raise FixError(f"{e.layer.name}: the new weights do not land on the quantizer's grid "
                           "(a weight zero-point outside its range cannot add nothing)")
    return w


@dataclass(frozen=True)
class Fixed:
    """A fixed model: its proto, the data it reads (new weights patched over the original's
    bytes, not copied into the proto) and the initializers changed in place."""

    model: ModelProto
    data: TensorData | None
    touched: frozenset[str]

    def graph(self) -> Graph:
        return Graph(self.model, self.data)


class _Store:
    """Where new initializer values go: over the bytes of a tensor that stays in its file, or
    into the fixed proto."""

    def __init__(self, graph: Graph, g) -> None:
        self.graph, self.inits = graph, {t.name: t for t in g.initializer}
        self.patches: list[tuple[TensorProto, np.ndarray]] = []
        self.touched: set[str] = set()

    def set(self, name: str, values: np.ndarray) -> None:
        """New values of the same shape: over the original's bytes where they sit in a file."""
        original = self.graph.const_proto(name)
        if self.graph.data is not None and is_external(original) and original.data_type in PLAIN_DTYPES:
            self.patches.append((original, values))
            self.touched.add(name)
        else:
            self.embed(name, values)

    def embed(self, name: str, values: np.ndarray) -> None:
        """New values (of any shape) held in the fixed proto."""
        self.inits[name].CopyFrom(_tensor(values, name, self.graph.const_proto(name)))
        self.touched.add(name)

    def data(self) -> TensorData | None:
        return self.graph.data.patched(self.patches) if self.patches else self.graph.data


def apply(graph: Graph, edits: list[LayerEdit]) -> Fixed:
    """A copy of the graph's model with the edits made."""
    fixed = ModelProto()
    fixed.CopyFrom(graph.model)
    g = fixed.graph
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    names = _Names(fixed)
    store = _Store(graph, g)
    for e in edits:
        la, weight = e.layer, e.layer.layer.weight
        path = [g.node[index[id(n)]] for n in weight.path]
        if not e.flags.any():
            pass  # no weight changes: only a quantizer or a bias does
        elif not _is_shared(graph, la):
            store.set(weight.source, _edited_weights(graph, e))
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
        if e.weight_quantizer is not None and e.weight_quantizer.node is la.layer.node:  # QOperator
            _regrid(graph, g.node[index[id(la.layer.node)]], e.weight_quantizer, names, g)
            _rescale_int_bias(graph, la, e.weight_quantizer, store)
        elif e.weight_quantizer is not None:
            _regrid(graph, next(c for c, n in zip(path, weight.path) if n is e.weight_quantizer.node),
                    e.weight_quantizer, names, g)
        if e.input_quantizer is not None:
            _regrid(graph, g.node[index[id(e.input_quantizer.node)]], e.input_quantizer, names, g)
        if e.bias_delta is not None:
            _correct_bias(graph, la, e.bias_delta, store)
    _drop_orphans(graph.model, fixed)
    _topological_sort(fixed)
    return Fixed(fixed, store.data(), frozenset(store.touched))


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
    """Point the quantizer at a new scale (its ``scale_input``) and, for QONNX, bit-width (input 3)."""
    changes = [(q.scale_input, q.scale)] + ([(3, np.array(q.bits))] if q.bits is not None else [])
    for i, value in changes:
        old = graph.const(node.input[i])
        value = np.asarray(value).reshape(old.shape) if np.size(value) == old.size else np.asarray(value)
        name = names.new(node.input[i])
        g.initializer.append(_tensor(value, name, graph.const_proto(node.input[i])))
        node.input[i] = name


def qoperator_scale(graph: Graph, la: LayerAnalysis) -> int | None:
    """Which input of a QLinear layer holds its weight's scale, when a new scale can be given to
    this layer alone: a constant, and an int32 bias (in units of the two scales' product) that no
    other node reads, so that it can be rescaled with it."""
    node = la.layer.node
    spec = SPECS.get((node.domain, node.op_type))
    if spec is None or not spec.scales:
        return None
    at = spec.zero_points[la.layer.weight.operand] - 1
    bias = optional_input(node, spec.bias)
    if not graph.is_initializer(node.input[at]) or bias and (not graph.is_initializer(bias)
                                                             or len(graph.consumers[bias]) != 1):
        return None
    return at


def _rescale_int_bias(graph: Graph, la: LayerAnalysis, q: QuantizerEdit, store: _Store) -> None:
    """A QOperator layer's int32 bias counts steps of input scale x weight scale: on the new
    weight scale it is the same real bias in fewer, larger steps."""
    node = la.layer.node
    spec = SPECS[node.domain, node.op_type]
    name = optional_input(node, spec.bias)
    if not name:
        return
    old = graph.const(node.input[q.scale_input]).astype(np.float64).reshape(-1)
    bias = graph.const(name)
    new = np.round(bias.astype(np.float64) * (old / q.scale.astype(np.float64).reshape(-1)))
    store.set(name, new.astype(bias.dtype).reshape(bias.shape))


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


def _correct_bias(graph: Graph, la: LayerAnalysis, delta: np.ndarray, store: _Store) -> None:
    name = bias_input(graph, la)
    value = graph.const(name)
    new = (np.broadcast_to(value.reshape(-1), delta.shape) + delta).astype(value.dtype)
    if value.size == delta.size:
        store.set(name, new.reshape(value.shape))
    else:  # a scalar bias becomes one per neuron: a new shape, in the proto
        store.embed(name, new)


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
