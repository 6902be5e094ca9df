"""Read-only index over an ONNX graph: who produces and consumes each tensor, which are constant.

Constants (initializers and ``Constant`` nodes) are converted to numpy once and cached, since
one scale or zero-point initializer is typically shared by many quantizers.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from fhe_lint.errors import UnsupportedModelError
from fhe_lint.formats.channels_last import as_channels_first
from fhe_lint.formats.ops import QONNX_DOMAINS
from fhe_lint.io.onnx_proto import ModelProto, NodeProto, TensorProto, attribute_value, infer_shapes, to_array
from fhe_lint.io.tensor_data import TensorData, is_external

# Sub-byte integer types, decoded into the smallest numpy integer that holds them.
_PACKED_INT = {TensorProto.INT4: np.int8, TensorProto.UINT4: np.uint8}

# Ops whose output is known without any encrypted value: the shape of a tensor is clear.
_CLEAR_OUTPUT_OPS = {"Shape", "Size"}


class Graph:
    def __init__(self, model: ModelProto, data: TensorData | None = None) -> None:
        self.model = model
        self.data = data  # resolves external tensors; None for models held wholly in memory
        g = model.graph
        self.nodes: list[NodeProto] = list(g.node)
        self.producer: dict[str, NodeProto] = {}
        self.consumers: dict[str, list[NodeProto]] = defaultdict(list)
        self.names: dict[int, str] = {}
        for i, node in enumerate(self.nodes):
            self.names[id(node)] = node.name or f"{node.op_type}_{i}"
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self._const_protos: dict[str, TensorProto] = {t.name: t for t in g.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = next((a for a in node.attribute if a.name == "value" and a.type == a.TENSOR), None)
                if value is not None:
                    self._const_protos[node.output[0]] = value.t
        self._const_cache: dict[str, np.ndarray] = {}
        self._shapes: dict[str, list[int]] | None = None
        self._tainted: frozenset[str] | None = None
        self.inputs: list[str] = [i.name for i in g.input if i.name not in self._const_protos]

    def name(self, node: NodeProto) -> str:
        """A stable display name, even for the unnamed nodes some exporters write."""
        return self.names[id(node)]

    def is_const(self, tensor: str) -> bool:
        return tensor in self._const_protos

    def const(self, tensor: str) -> np.ndarray:
        if tensor not in self._const_cache:
            proto = self._const_protos.get(tensor)
            if proto is None:
                raise UnsupportedModelError(f"tensor {tensor!r} is not a constant (initializer)")
            try:
                value = self._external(proto) if is_external(proto) else to_array(proto)
                if proto.data_type in _PACKED_INT:  # int4/uint4 come as ml_dtypes scalars: widen
                    value = value.astype(_PACKED_INT[proto.data_type])
                self._const_cache[tensor] = value
            except (ValueError, TypeError, KeyError) as e:  # KeyError: unknown data_type
                raise UnsupportedModelError(f"initializer {tensor!r} cannot be decoded: {e!r}") from e
        return self._const_cache[tensor]

    def _external(self, proto: TensorProto) -> np.ndarray:
        if self.data is None:
            raise UnsupportedModelError(f"initializer {proto.name!r} is external data, not loaded")
        return self.data.array(proto)

    def evict(self) -> None:
        """Hand the pages of mapped weights back (see ``TensorData.evict``)."""
        if self.data is not None:
            self.data.evict()

    def release(self, a: np.ndarray) -> None:
        """Hand back the pages behind ``a`` if it is a view of a mapped file (``TensorData.release``)."""
        if self.data is not None:
            self.data.release(a)

    def standalone(self) -> ModelProto:
        """The model with every tensor's data inside it, for evaluators that read the proto."""
        return self.model if self.data is None else self.data.standalone(self.model)

    def const_proto(self, tensor: str) -> TensorProto | None:
        return self._const_protos.get(tensor)

    def shape(self, tensor: str) -> list[int | None] | None:
        """Shape of ``tensor`` from ONNX shape inference (``None`` for a symbolic dimension such
        as a batch ``N``), run once on a copy onnx can read: nodes in dependency order, QONNX
        quantizers as Identity (a quantizer keeps its input's shape), channels-last ops as their
        standard op between two transposes, malformed ``value_info`` entries dropped."""
        if self._shapes is None:
            try:  # only pools, encrypted products and the cost of convolutions need shapes
                inferred = infer_shapes(self._inferable()).graph
            except Exception:  # noqa: BLE001 - inference is best effort; unknown shapes stay unknown
                inferred = self.model.graph
            self._shapes = {}
            for v in (*inferred.input, *inferred.value_info, *inferred.output):
                if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                    self._shapes[v.name] = _dims(v.type.tensor_type)
        return self._shapes.get(tensor)

    def _inferable(self) -> ModelProto:
        model = ModelProto()
        model.CopyFrom(self.model)
        g = model.graph
        ordered = [NodeProto() for _ in self.nodes]
        for copy, node in zip(ordered, self.topological()):
            copy.CopyFrom(node)
            if node.domain in QONNX_DOMAINS and node.op_type in ("Quant", "BipolarQuant"):
                del copy.input[1:]
                del copy.attribute[:]
                copy.op_type, copy.domain = "Identity", ""
        del g.node[:]
        g.node.extend(ordered)
        kept = [v for v in g.value_info if v.type.HasField("tensor_type") and v.type.tensor_type.elem_type]
        del g.value_info[:]
        g.value_info.extend(kept)
        return as_channels_first(model)

    def _declared(self, tensor: str):
        """The tensor type a graph input, output or value_info declares for ``tensor``, if any."""
        g = self.model.graph
        return next((v.type.tensor_type for v in (*g.input, *g.value_info, *g.output)
                     if v.name == tensor and v.type.HasField("tensor_type")), None)

    def declared_shape(self, tensor: str) -> list[int | None] | None:
        """The shape the model itself declares for ``tensor`` (``None`` for a symbolic dimension),
        read without shape inference (nor importing onnx)."""
        t = self._declared(tensor)
        return _dims(t) if t is not None and t.HasField("shape") else None

    def declared_type(self, tensor: str) -> int | None:
        """The element type the model declares for ``tensor``."""
        t = self._declared(tensor)
        return t.elem_type if t is not None else None

    def is_initializer(self, tensor: str) -> bool:
        return any(t.name == tensor for t in self.model.graph.initializer)

    def encrypted_nodes(self) -> Iterator[NodeProto]:
        """Nodes that read, directly or not, a (non-constant) graph input: the encrypted path."""
        tainted = self.encrypted_tensors()
        return (n for n in self.topological() if n.op_type not in _CLEAR_OUTPUT_OPS and any(i in tainted for i in n.input))

    def encrypted_tensors(self) -> frozenset[str]:
        """Tensors computed, directly or not, from a (non-constant) graph input."""
        if self._tainted is None:
            tainted = set(self.inputs)
            for node in self.topological():
                if node.op_type not in _CLEAR_OUTPUT_OPS and any(i in tainted for i in node.input):
                    tainted.update(o for o in node.output if o)
            self._tainted = frozenset(tainted)
        return self._tainted

    def topological(self) -> list[NodeProto]:
        """Nodes in dependency order, the file's own order wherever it is already valid (Kahn with
        a min-heap on position); a cycle or an undefined tensor is a broken model."""
        known = set(self._const_protos) | {i.name for i in self.model.graph.input} | {""}
        waiting: dict[str, list[int]] = defaultdict(list)
        missing_count = []
        for k, node in enumerate(self.nodes):
            needs = {i for i in node.input if i not in known}
            missing_count.append(len(needs))
            for i in needs:
                waiting[i].append(k)
        ready = [k for k, n in enumerate(missing_count) if n == 0]
        heapq.heapify(ready)
        ordered: list[NodeProto] = []
        while ready:
            node = self.nodes[heapq.heappop(ready)]
            ordered.append(node)
            for out in node.output:
                for k in waiting.pop(out, ()):
                    missing_count[k] -= 1
                    if missing_count[k] == 0:
                        heapq.heappush(ready, k)
        if len(ordered) < len(self.nodes):
            undefined = sorted(t for t in waiting if t not in self.producer)
            if undefined:
                raise UnsupportedModelError(f"tensor {undefined[0]!r} is used but never defined (missing initializer?)")
            raise UnsupportedModelError("the graph has a cycle")
        return ordered


def _dims(tensor_type) -> list[int | None]:
    """A tensor type's dimensions, ``None`` for a symbolic one (a batch ``N``)."""
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def optional_input(node: NodeProto, index: int | None) -> str:
    """Input ``index`` of ``node``, or "" when the node leaves that optional input out (ONNX
    drops trailing empty inputs)."""
    return node.input[index] if index is not None and len(node.input) > index else ""


def attr(node: NodeProto, name: str, default=None):
    """The value of attribute ``name`` of ``node`` (decoded), or ``default``."""
    for a in node.attribute:
        if a.name == name:
            try:
                return attribute_value(a)
            except UnicodeDecodeError as e:
                raise UnsupportedModelError(f"{node.op_type} {node.name!r}: attribute {name!r} is not valid UTF-8") from e
            except (ValueError, TypeError, KeyError) as e:
                raise UnsupportedModelError(f"{node.op_type} {node.name!r}: attribute {name!r} is malformed") from e
    return default
