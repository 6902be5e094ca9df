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
    output format reads), with the model's class name as its path. A layer whose export holds
    other integer weights than Brevitas trains with (A2Q's, say) is also warned about: the report
    is true of what Concrete ML would compile, which is then not the trained model."""
    settings = settings or Settings()
    with _exported(model, example_input) as path:
        from fhe_lint.runner import run_file

        report = run_file(path, settings)
        unfaithful = _unfaithful(model, example_input, lint_path(path, settings)) if report.error is None else []
    label = Path(f"<{type(model).__name__}>")
    if report.error is not None:
        raise FheLintError(report.error.replace(str(path), str(label)))
    for message in unfaithful:
        warnings.warn(message, stacklevel=2)
    return replace(report, path=label)


def _unfaithful(model: Any, example_input: Any, result: LintResult) -> list[str]:
    """What :func:`~fhe_lint.torch.pairing.check_exported_as_trained` says of each layer (none
    when the layers cannot be paired: the report stands alone then)."""
    from fhe_lint.torch.pairing import LINEAR, check_exported_as_trained, levels, paired

    try:
        pairs = paired(model, example_input, result.analysis)
    except FheLintError:
        return []
    found = []
    for name, module, la in pairs:
        if type(module).__name__ not in LINEAR:
            continue
        try:
            check_exported_as_trained(name, levels(module), la.layer.weight.d)
        except FheLintError as e:
            found.append(str(e))
    return found
