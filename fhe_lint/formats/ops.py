"""ONNX domains and op names that several parts of fhe-lint must agree on, importable without
onnx or numpy (rules read them too)."""

from __future__ import annotations

# Where QONNX's quantizers live: Brevitas exports, qonnx, and FINN's older name.
QONNX_DOMAINS = frozenset({"onnx.brevitas", "qonnx.custom_op.general", "finn.custom_op.general"})

# qonnx's channels-last ops (Conv, MaxPool, BatchNormalization on NHWC data, as hls4ml uses them):
# the standard op's semantics with the channel axis last.
CHANNELS_LAST_DOMAIN = "qonnx.custom_op.channels_last"

# Ops that only rearrange a tensor (a weight's layout follows them exactly).
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})
# Ops whose outputs are copies of some of their input's values, whatever their attributes: the
# integers behind them are still the quantizer's.
VALUE_MOVING_OPS = LAYOUT_OPS | {"MaxPool", "DepthToSpace", "SpaceToDepth", "Slice", "Gather", "Split", "Tile",
                                 "Expand"}
# Ops that move values only in some modes (zero Pad, nearest Resize), and Concat, whose range is
# the union of its inputs': all keep their input's element type.
TYPE_KEEPING_OPS = VALUE_MOVING_OPS | {"Pad", "Resize", "Upsample", "Concat"}
