"""Train within the bound: fhe-lint's exact accumulator check inside a PyTorch/Brevitas loop.

    from fhe_lint.torch import AccumulatorGuard, lint_module

    guard = AccumulatorGuard(model, example_input, n_max=16)
    for epoch in range(epochs):
        for x, y in batches:
            loss = criterion(model(x), y)                     # (+ guard.penalty(): optional)
            ...
        guard.step()                                         # enforce: prune what still overflows
    guard.finalize()                                         # masks become plain zeros
    report = lint_module(model, example_input)               # what `fhe-lint` says on the export

Needs the ``torch`` extra (torch, brevitas, onnxoptimizer for Brevitas's QONNX export).
"""

from fhe_lint.torch.export import analysed_export, lint_module
from fhe_lint.torch.guard import AccumulatorGuard

__all__ = ["AccumulatorGuard", "lint_module", "analysed_export"]
