"""FHE004 unsupported-op

## What it does
Walks the encrypted path (every node that reads, directly or not, a model input; shape
computations excepted) and reports each op that Concrete ML cannot evaluate on encrypted data.

## Why it matters
Concrete ML converts the ONNX graph op by op; an op it has no implementation for stops the
compilation (``compile_brevitas_qat_model`` / ``compile_onnx_model``) whatever the bit-widths.

## Example
A super-resolution network ending in ``DepthToSpace``::

    model.onnx:DepthToSpace_42: FHE004 DepthToSpace is not supported by Concrete ML on encrypted data

## Fix
Replace the op by supported ones (a ``DepthToSpace`` by ``Reshape`` + ``Transpose``, a
``Softmax`` by moving it after decryption), or run that part of the model in the clear.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.formats.ops import QONNX_DOMAINS
from fhe_lint.rule import FixAvailability, Rule

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis

# Concrete ML's ONNX op table (ONNX_OPS_TO_NUMPY_IMPL and its float comparison ops).
SUPPORTED_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape", "Conv",
    "Cos", "Cosh", "Div", "Elu", "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather",
    "Gemm", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not",
    "OneHot", "Or", "Pad", "PRelu", "Pow", "ReduceSum", "Relu", "Reshape", "Round", "Selu",
    "Shape", "Sigmoid", "Sign", "Sin", "Sinh", "Slice", "Softplus", "Squeeze", "Sub", "Tan",
    "Tanh", "ThresholdedRelu", "Transpose", "Unfold", "Unsqueeze", "Where",
})


def _supported(domain: str, op_type: str) -> bool:
    if domain in ("", "ai.onnx"):
        return op_type in SUPPORTED_OPS
    return domain in QONNX_DOMAINS and op_type == "Quant"


def check(analysis: ModelAnalysis) -> Iterator[Diagnostic]:
    graph = analysis.graph
    for node in graph.encrypted_nodes():
        if not _supported(node.domain, node.op_type):
            op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            yield RULE.diagnostic(
                f"{op} is not supported by Concrete ML on encrypted data",
                node=graph.name(node), op=op,
            )


RULE = Rule(
    code="FHE004",
    name="unsupported-op",
    severity=Severity.ERROR,
    fix=FixAvailability.NONE,
    summary="an op Concrete ML cannot run in FHE sits on the encrypted path",
    doc=__doc__,
    check=check,
)
