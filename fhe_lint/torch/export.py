"""A Brevitas model as fhe-lint sees it: exported to QONNX exactly as Concrete ML's
``compile_brevitas_qat_model`` exports it, then read by the CLI's own loader and rules."""

from __future__ import annotations

import contextlib
import importlib
import io
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fhe_lint.errors import FheLintError
from fhe_lint.linter import LintResult, lint_path
from fhe_lint.report.model import FileReport
from fhe_lint.settings import Settings


@contextlib.contextmanager
def _exported(model: Any, example_input: Any) -> Iterator[Path]:
    """The model's QONNX export in a temporary file, made in eval mode without gradients; the
    model's mode is restored afterwards."""
    try:
        import torch

        importlib.import_module("brevitas.export")  # the extra's absence, said before any work
    except ImportError as e:
        raise FheLintError('fhe_lint.torch needs the "torch" extra: pip install torch brevitas onnxoptimizer') from e
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # the exporter's progress and deprecation chatter
            path = Path(tmp) / "model.onnx"
            export(model, example_input, path)
            yield path
    finally:
        model.train(was_training)


CONCRETE_ML_OPSET = 14  # compile_brevitas_qat_model exports at, and accepts only, this opset
CONCRETE_ML_DOMAIN = "onnx.brevitas"  # where the Brevitas Concrete ML pins puts Quant (newer: qonnx's)


def export(model: Any, example_input: Any, path: Path) -> None:
    """Brevitas's QONNX export with Concrete ML's arguments (opset 14, initializers not inputs),
    torch's TorchScript exporter (the one Concrete ML's pinned torch uses) and the quantizers in
    the domain Concrete ML's ``compile_onnx_model`` reads."""
    import onnx
    from brevitas.export import export_qonnx

    export_qonnx(model, example_input, export_path=str(path), opset_version=CONCRETE_ML_OPSET,
                 keep_initializers_as_inputs=False, dynamo=False)
    exported = onnx.load(str(path))
    custom = {n.domain for n in exported.graph.node} - {"", "ai.onnx"}
    for node in exported.graph.node:
        if node.domain in custom:
            node.domain = CONCRETE_ML_DOMAIN
    kept = [o for o in exported.opset_import if o.domain not in custom | {CONCRETE_ML_DOMAIN}]
    del exported.opset_import[:]
    exported.opset_import.extend(kept)
    if custom:
        exported.opset_import.add(domain=CONCRETE_ML_DOMAIN, version=1)
    onnx.save(exported, str(path))


def analysed_export(model: Any, example_input: Any, settings: Settings | None = None) -> LintResult:
    """fhe-lint's full analysis (layers, exact bounds, findings) of the model's QONNX export."""
    with _exported(model, example_input) as path:
        return lint_path(path, settings or Settings())


def lint_module(model: Any, example_input: Any, settings: Settings | None = None) -> FileReport:
    """The report ``fhe-lint`` gives on the model's QONNX export (the same typed report every
    output format reads), with the model's class name as its path."""
    with _exported(model, example_input) as path:
        from fhe_lint.runner import run_file

        report = run_file(path, settings or Settings())
    label = Path(f"<{type(model).__name__}>")
    if report.error is not None:
        raise FheLintError(report.error.replace(str(path), str(label)))
    return replace(report, path=label)


# Brevitas divides in float32, fhe-lint's reader (as Concrete ML) in float64: a quotient within a
# float32 ulp of a half rounds the other way, about one weight level in a million on random layers
_TIES = 1e-4


def check_exported_as_trained(name: str, trained: np.ndarray, exported: np.ndarray) -> None:
    """Refuse a layer whose QONNX export holds other integer weights than Brevitas trains with:
    the guard would bound a model Concrete ML never compiles. Brevitas 0.13's weight-normalized
    quantizers (A2Q, A2Q+, ``Int8WeightNormL2PerChannelFixedPoint``) export the raw weight with
    the scale alone, their levels off by up to 119 on a random layer; a float32 tie is one level
    on rare weights."""
    if trained.shape != exported.shape:
        raise FheLintError(f"{name}: its weight is {trained.shape} per neuron, the export's "
                           f"{exported.shape}: cannot pair them")
    gap = np.abs(trained - exported)
    if gap.size and (gap.max() > 1 or np.count_nonzero(gap) > max(1, _TIES * gap.size)):
        raise FheLintError(f"{name}: Brevitas exports other integer weights than it trains with "
                           f"({np.count_nonzero(gap)} of {gap.size} levels differ, by up to {int(gap.max())}): "
                           "its weight quantizer does not export to QONNX as it computes (weight-normalized "
                           "ones such as A2Q do not), so Concrete ML would compile another model; train it with "
                           "one that does (Int8WeightPerTensorFloat, Int8WeightPerChannelFloat): the guard keeps "
                           "the accumulator bound itself")
