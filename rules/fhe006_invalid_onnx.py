"""FHE006 invalid-onnx

## What it does
Reports that ``onnx.checker`` rejects the model file, with the checker's message, while
fhe-lint still analyses every layer it can parse and resolve.

## Why it matters
Real producers write models that onnxruntime runs and the checker refuses: nodes out of
topological order, a ``value_info`` without a type, an attribute the schema does not expect.
Refusing them would hide every overflow they contain, so fhe-lint is as lenient as the runtime
and says what the checker objected to: other tools in the chain (Concrete ML's import among
them) may be stricter. A graph that cannot be analysed at all (a cycle, an undefined tensor,
undecodable data) is still an error of the tool (exit 2), never a clean result.

## Example
A model whose nodes are not sorted::

    model.onnx: FHE006 onnx.checker rejects the model: Nodes in a graph must be topologically sorted, however input 'a' of node ...

## Fix
Re-export the model, or normalise it with ``onnx.shape_inference`` / onnxruntime's model
optimizer (``python -m onnxruntime.transformers.optimizer``) or onnx-simplifier, which sort
nodes and drop malformed ``value_info`` entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from fhe_lint.diagnostics import Diagnostic, Severity
from fhe_lint.rule import FixAvailability, Rule

if TYPE_CHECKING:
    from fhe_lint.analysis.accumulators import ModelAnalysis


def check(analysis: ModelAnalysis) -> Iterator[Diagnostic]:
    if analysis.complaint is not None:
        yield RULE.diagnostic(f"onnx.checker rejects the model: {analysis.complaint}", checker=analysis.complaint)


RULE = Rule(
    code="FHE006",
    name="invalid-onnx",
    severity=Severity.WARNING,
    fix=FixAvailability.NONE,
    summary="onnx.checker rejects the file; the layers that could be read were analysed",
    doc=__doc__,
    check=check,
)
