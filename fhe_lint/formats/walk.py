"""Where a layer input's integers come from: a walk back from the layer to a quantizer.

Every op the walk may cross has one entry in one table (as qonnx's ``optype_to_range_calc`` and
onnxruntime's QDQ registry keep theirs): an op that copies values passes the range on (a zero
``Pad`` adds the zero), an op that combines ranges (``Concat``, a residual ``Add``) combines its
inputs' ranges, and each format's quantizer ends the walk with its integer range. Any other op
leaves the range unknown, with the reason (FHE005), never a silent guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from fhe_lint.bounds import int_bits
from fhe_lint.formats import qdq, qonnx
from fhe_lint.formats.graph import Graph, attr, optional_input
from fhe_lint.formats.ops import VALUE_MOVING_OPS
from fhe_lint.formats.quantizer import InputRange, IntRange
from fhe_lint.io.onnx_proto import NodeProto


@dataclass(frozen=True)
class _Through:
    """One step back: the tensor the values come from, and whether padding zeros join them."""

    tensor: str
    zeros: bool = False


def _is_zero_pad(graph: Graph, node: NodeProto) -> bool:
    if (attr(node, "mode", "constant") or "constant") != "constant":
        return True  # reflect/edge/wrap pads copy existing values
    value = optional_input(node, 2)
    if value and (not graph.is_const(value) or np.any(graph.const(value) != 0)):
        return False
    return float(attr(node, "value", 0.0)) == 0.0


def _copy(graph: Graph, node: NodeProto) -> _Through:
    return _Through(node.input[0])


def _pad(graph: Graph, node: NodeProto) -> _Through | str:
    return _Through(node.input[0], zeros=True) if _is_zero_pad(graph, node) else \
        f"Pad {graph.name(node)!r} pads with a non-zero constant"


def _nearest(graph: Graph, node: NodeProto) -> _Through | None:
    return _Through(node.input[0]) if attr(node, "mode", "nearest") == "nearest" else None


# op -> how values cross it backwards: a step, a reason the range is lost there, or None when
# this node does not just move values (the walk then ends at it)
PASS_THROUGH: dict[str, Callable[[Graph, NodeProto], _Through | str | None]] = {
    **{op: _copy for op in VALUE_MOVING_OPS}, "Pad": _pad, "Resize": _nearest, "Upsample": _nearest,
}


def _concat(ranges: list[InputRange]) -> InputRange:
    total = ranges[0].range
    for r in ranges[1:]:
        total = total.union(r.range)
    return InputRange(total, max(r.bits for r in ranges), sum((r.quantizers for r in ranges), ()))


def _residual_sum(ranges: list[InputRange]) -> InputRange | None:
    """A residual Add of two encrypted branches: with one scale and zero-point 0 on both sides
    the integers simply add; otherwise the sum has no integer grid fhe-lint can name."""
    a, b = ranges
    if a.scale_zero_point is None or a.scale_zero_point != b.scale_zero_point or a.scale_zero_point[1] != 0:
        return None
    total = IntRange(a.range.lo + b.range.lo, a.range.hi + b.range.hi)
    return InputRange(total, int_bits(total.lo, total.hi), a.quantizers + b.quantizers, a.scale_zero_point)


# Each format's quantizer, where a walk ends: its output's integer range, or None for another op.
QUANTIZER_ENDS: tuple[Callable[[Graph, NodeProto], InputRange | None], ...] = (qonnx.output_range, qdq.output_range)
# op -> how it combines the ranges of its run-time inputs (None: into no integer grid)
COMBINE: dict[str, Callable[[list[InputRange]], InputRange | None]] = {"Concat": _concat, "Add": _residual_sum}


def input_range(graph: Graph, tensor: str) -> tuple[InputRange | None, str | None]:
    """The integer range a layer input can take, or why it is unknown."""
    zeros = False
    while True:
        node = graph.producer.get(tensor)
        if node is None:
            return None, f"its input {tensor!r} is a model input with no quantizer in front"
        step = PASS_THROUGH[node.op_type](graph, node) if node.op_type in PASS_THROUGH else None
        if isinstance(step, str):
            return None, step
        if step is None:
            break
        zeros |= step.zeros
        tensor = step.tensor
    found, why = _end(graph, node)
    if found is not None and zeros:
        found = replace(found, range=found.range.with_zero())
    return found, why


def _end(graph: Graph, node: NodeProto) -> tuple[InputRange | None, str | None]:
    """The range at the node a walk stopped at: a quantizer's, or its inputs' combined."""
    for end in QUANTIZER_ENDS:
        found = end(graph, node)
        if found is not None:
            return found, None
    op = node.op_type
    if op not in COMBINE:
        return None, f"its input comes from {op} {graph.name(node)!r} with no quantizer after it"
    parts = [input_range(graph, t) for t in node.input if t and not graph.is_const(t)]
    unknown = next((why for rng, why in parts if rng is None), None)
    if unknown or not parts or (op == "Add" and len(parts) != 2):
        return None, unknown or f"its input comes from {op} {graph.name(node)!r} of constants"
    found = COMBINE[op]([rng for rng, _ in parts])
    if found is None:
        return None, f"its input comes from Add {graph.name(node)!r} of branches with different scales"
    return found, None
