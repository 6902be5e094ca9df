"""Lint (and fix) files, one process or many; every failure becomes a FileReport's error.

Kept apart from the CLI so that ``-j N`` can ship plain-data reports between processes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhe_lint.errors import FheLintError
from fhe_lint.report.model import FileReport
from fhe_lint.settings import Settings

if TYPE_CHECKING:
    import numpy as np

    from fhe_lint.linter import LintResult
    from fhe_lint.formats.quantizer import IntRange


def run_file(path: Path, settings: Settings, fix: bool = False, output: Path | None = None) -> FileReport:
    from fhe_lint.linter import lint_model
    from fhe_lint.io.model_io import read_model, write_model

    try:
        model, tensors, complaint = read_model(path)
        result = lint_model(model, path, settings, tensors, complaint)
        data = None
        if settings.calibration is not None:
            from fhe_lint.analysis.execute import load_data

            data = load_data(settings.calibration)
        if not fix:
            return _confirmed(FileReport.of(result, observed=_observed(result, data)), result, data)
        from fhe_lint.fix import fix_model

        outcome = fix_model(result, data)
        del result  # the unfixed model's arrays: the report and the write read the fixed one's
        summary = outcome.summary
        if summary.refused is None:
            target: Path | None = output or path
            if outcome.fixed is not None:
                fixed = outcome.fixed
                write_model(fixed.model, model, fixed.data or tensors, target, fixed.touched)
            elif output is not None:
                write_model(model, model, tensors, output, frozenset())  # a clean model is copied as it is
            else:
                target = None
            summary = replace(summary, written=str(target) if target else None)
        return _confirmed(FileReport.of(outcome.result, summary, _observed(outcome.result, data)), outcome.result, data)
    except FheLintError as e:
        message = str(e)
        return FileReport(path, settings, error=message if message.startswith(str(path)) else f"{path}: {message}")
    except MemoryError:
        return FileReport(path, settings, error=f"{path}: out of memory while analysing the model")
    except Exception as e:  # noqa: BLE001 - a linter must report, not crash, on any model
        return FileReport(path, settings, error=f"{path}: cannot analyse this model ({type(e).__name__}: {e})")


def _observed(result: LintResult, data: np.ndarray | None) -> dict[str, IntRange] | None:
    """With --calibration: each layer's accumulator range over the data."""
    if data is None:
        return None
    from fhe_lint.analysis.calibration import observed_ranges

    return observed_ranges(result.analysis, data)


def _estimated_at(result: LintResult, widths: dict[str, int] | None) -> dict[str, Any]:
    """fhe-lint's estimate at the widths Concrete ML compiled (its input set holds worst cases
    the calibration data may not): the like-for-like prediction of its figures."""
    if not widths:
        return {}
    from fhe_lint.analysis.cost import model_cost
    from fhe_lint.analysis.estimate import model_estimate

    rounding = result.analysis.settings.rounding_bits
    e = model_estimate(model_cost(result.analysis, rounding, widths), rounding)
    return {"estimate_at_these_widths": e.as_json()} if e is not None else {}


def _confirmed(report: FileReport, result: LintResult, data: np.ndarray | None) -> FileReport:
    """With --confirm: Concrete's own bit-widths per layer, or Concrete ML's verdict on the model.
    A confirmation that cannot run (no Concrete installed) leaves the static report standing."""
    mode = result.analysis.settings.confirm
    if mode is None:
        return report
    from fhe_lint.analysis import confirm

    try:
        if mode == "network":
            network = confirm.confirm_network(result.analysis, data)
            return replace(report, confirm_network={**network.as_json(), **_estimated_at(result, network.widths)})

        def progress(i: int, n: int, name: str) -> None:  # compiling is the slow part: say which layer
            status(f"confirming {name} ({i}/{n}) with Concrete")

        confirmed = confirm.confirm_layers(result.analysis, progress)
    except FheLintError as e:
        return replace(report, incomplete=f"{report.path}: {e}")
    finally:
        status(None)
    return replace(report, layers=tuple(replace(layer, confirmed=True, confirmed_bits=confirmed.get(layer.node))
                                        for layer in report.layers))


def status(text: str | None) -> None:
    """One self-overwriting line on a terminal's stderr (``None`` clears it); silent elsewhere."""
    if sys.stderr.isatty():
        print(f"\r\033[K{'fhe-lint: ' + text if text else ''}", end="", file=sys.stderr, flush=True)


def _run_args(args: tuple[Path, Settings, bool, Path | None]) -> FileReport:
    return run_file(*args)


def run_files(jobs: list[tuple[Path, Settings]], fix: bool, output: Path | None, processes: int,
              progress: Callable[[int, int, Path], None] | None = None) -> list[FileReport]:
    """Reports in the order of ``jobs``; ``processes > 1`` lints files in parallel processes."""
    work = [(path, settings, fix, output) for path, settings in jobs]
    if processes <= 1 or len(work) <= 1:
        results = map(_run_args, work)
        return [_tick(r, i, len(work), progress) for i, r in enumerate(results, 1)]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(processes, len(work))) as pool:
        return [_tick(r, i, len(work), progress) for i, r in enumerate(pool.map(_run_args, work), 1)]


def _tick(report: FileReport, done: int, total: int, progress: Callable[[int, int, Path], None] | None) -> FileReport:
    if progress is not None and total > 1:
        progress(done, total, report.path)
    return report
