"""ONNX domains and op names that several parts of fhe-lint must agree on, importable without
onnx or numpy (rules read them too)."""

from __future__ import annotations

# Where QONNX's quantizers live: Brevitas exports, qonnx, and FINN's older name.
QONNX_DOMAINS = frozenset({"onnx.brevitas", "qonnx.custom_op.general", "finn.custom_op.general"})
