"""qonnx's channels-last ops (``qonnx.custom_op.channels_last``: Conv, MaxPool,
BatchNormalization on NHWC data, as qonnx's channels-last transformation and hls4ml write them).

Each is the standard op with the channel axis last, for its data and for a Conv's weight too
(``O, *kernel, I``: qonnx's executor transposes the first two inputs of a Conv). The analysis
reads the weight with its input axis moved back beside the output axis; what must see the data
itself (shape inference, the reference evaluator) sees each op as the standard op between
transposes.
"""

from __future__ import annotations

from fhe_lint.formats.ops import CHANNELS_LAST_DOMAIN
from fhe_lint.io.onnx_proto import AttributeProto, ModelProto, NodeProto

OPS = frozenset({"Conv", "MaxPool", "BatchNormalization"})


def is_channels_last(node: NodeProto) -> bool:
    return node.domain == CHANNELS_LAST_DOMAIN and node.op_type in OPS


def channels_at_end(node: NodeProto) -> bool:
    """Whether an op reads its data channels last: qonnx's channels-last ops, or an op whose own
    ``channels_last`` attribute says so (onnxruntime's QLinear pools)."""
    return is_channels_last(node) or any(a.name == "channels_last" and a.i for a in node.attribute)


def _rank(model: ModelProto, node: NodeProto) -> int:
    kernel = next((a.ints for a in node.attribute if a.name == "kernel_shape"), None)
    if kernel:
        return 2 + len(kernel)
    declared = {v.name: len(v.type.tensor_type.shape.dim) for v in (*model.graph.input, *model.graph.value_info)
                if v.type.tensor_type.HasField("shape")}
    return declared.get(node.input[0], 4)


def as_channels_first(model: ModelProto) -> ModelProto:
    """``model`` (changed in place, and returned) with each channels-last op replaced by
    Transpose(NHWC -> NCHW), the standard op, Transpose(NCHW -> NHWC)."""
    nodes: list[NodeProto] = []
    for node in model.graph.node:
        if not is_channels_last(node):
            nodes.append(node)
            continue
        rank = _rank(model, node)
        standard = NodeProto()
        standard.CopyFrom(node)
        standard.domain = ""
        for i in range(2 if node.op_type == "Conv" else 1):  # data, and a Conv's weight
            x = node.input[i]
            before = NodeProto(op_type="Transpose", input=[x], output=[f"{x}::channels_first"],
                               name=f"{node.name}::to_first{i}")
            before.attribute.add(name="perm", type=AttributeProto.INTS, ints=[0, rank - 1, *range(1, rank - 1)])
            standard.input[i] = before.output[0]
            nodes.append(before)
        y = node.output[0]
        standard.output[0] = f"{y}::channels_first"
        after = NodeProto(op_type="Transpose", input=[standard.output[0]], output=[y], name=f"{node.name}::to_last")
        after.attribute.add(name="perm", type=AttributeProto.INTS, ints=[0, *range(2, rank), 1])
        nodes += [standard, after]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
