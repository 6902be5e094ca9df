"""The command line: the one place where errors become messages and findings become exit codes.

Exit codes (ruff/flake8 style): 0 clean or warnings only, 1 at least one error (any finding with
--strict, or a refused fix), 2 usage error or a model that could not be read or analysed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fhe_lint import __version__
from fhe_lint.report.emitters import FORMATS
from fhe_lint.errors import FheLintError
from fhe_lint.settings import FIX_STRATEGIES, Settings

if TYPE_CHECKING:
    from fhe_lint.report.model import FileReport

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


def out(text: str, color: bool = False) -> None:
    """Write to stdout. A reader that stops early (``fhe-lint m.onnx | head``) leaves the verdict
    as it is: click would exit 1 on the broken pipe whatever the exit code was to be, and the
    interpreter would complain when flushing at exit; the rest of the output goes nowhere."""
    try:
        click.echo(text, color=color)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def error(message: str) -> None:
    """The one form of every failure of the tool itself, usage errors included: one line on stderr."""
    click.echo(f"fhe-lint: error: {message}", err=True)


class _DefaultCheckGroup(click.Group):
    """``fhe-lint MODEL...`` means ``fhe-lint check MODEL...``, as the main job should be short."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version", "-V"):
            args = ["check", *args]
        return super().parse_args(ctx, args)

    def main(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
        """click's own error report is three lines (usage, hint, message): here it is one.
        Outside its standalone mode click raises these errors and returns ``ctx.exit``'s code."""
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.Abort:
            sys.exit(130)
        except click.ClickException as e:
            error(e.format_message())
            sys.exit(EXIT_ERROR)
        sys.exit(code if isinstance(code, int) else EXIT_CLEAN)


def _codes(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> frozenset[str]:
    from fhe_lint.config import parse_codes

    try:
        return parse_codes(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from e


@click.group(cls=_DefaultCheckGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Options of the lint itself: fhe-lint check --help. Exit codes: 0 clean or warnings "
                    "only, 1 errors (or any finding with --strict), 2 usage error or unreadable model.")
@click.version_option(__version__, "-V", "--version", prog_name="fhe-lint")
def main() -> None:
    """Check that quantized ONNX models fit Concrete ML's 16-bit accumulators, and fix them.

    \b
      fhe-lint model.onnx                  lint (same as: fhe-lint check model.onnx)
      fhe-lint models/                     every .onnx under a directory
      fhe-lint model.onnx --layers         per-layer table with headroom
      fhe-lint model.onnx --per-neuron     one line per neuron instead of per layer
      fhe-lint model.onnx --fix -o out.onnx   change the violating layers until they fit
      fhe-lint rule FHE001                 explain a rule
      fhe-lint calibrate-cost              time FHE lookups here (the cost estimate's seconds)
    """




@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--n-max", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Largest accumulator bit-width Concrete can look up.")
@click.option("--multiplier", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="FHE002 keeps floor(Omega x multiplier) non-zero weights per neuron.")
@click.option("--strict", is_flag=True, help="Warnings fail the run (exit 1); --fix also enforces FHE002.")
@click.option("--select", multiple=True, callback=_codes, metavar="CODES",
              help="Only these rules: codes, prefixes (FHE00) or ALL, comma-separated; replaces the config's list.")
@click.option("--ignore", multiple=True, callback=_codes, metavar="CODES",
              help="Skip these rules (codes, prefixes); replaces the config's list.")
@click.option("--extend-select", multiple=True, callback=_codes, metavar="CODES",
              help="Add these rules to the selection (the config's or --select's).")
@click.option("--extend-ignore", multiple=True, callback=_codes, metavar="CODES",
              help="Skip these rules too, keeping the config's ignore list.")
@click.option("--model-suppressions/--no-model-suppressions", default=True,
              help="Honour the fhe-lint:ignore entries a model carries in its metadata (default); CI can refuse "
                   "them, so that a binary file cannot hide its own overflow.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip these paths when walking a directory (on top of the config's exclude).")
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), default="text", show_default=True,
              help="text for people; json (versioned report), sarif (code scanning), github "
                   "(workflow annotations), junit (CI dashboards).")
@click.option("--output-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report there instead of standard output.")
@click.option("--layers", is_flag=True, help="Also print a table of every linear layer (text format).")
@click.option("--per-neuron", is_flag=True,
              help="One line per neuron (text, github) instead of one per layer and rule.")
@click.option("--statistics", is_flag=True, help="Count findings per rule instead of listing them.")
@click.option("-q", "--quiet", is_flag=True, help="Print only findings, no summary.")
@click.option("--exit-zero", is_flag=True,
              help="Exit 0 even when findings fail the check (2 still means the tool could not do its job).")
@click.option("--weight-bits", type=click.IntRange(1, 32), metavar="N",
              help="Float models: quantize unquantized weights as Concrete ML's post-training "
                   "quantization does (symmetric, per tensor, N bits).")
@click.option("--input-bits", type=click.IntRange(1, 32), metavar="N",
              help="Float models: unquantized layer inputs are N-bit unsigned integers.")
@click.option("--rounding-bits", type=click.IntRange(2, 8), metavar="N",
              help="Concrete ML's rounding_threshold_bits (it accepts 2 to 8): accumulators are rounded to N bits "
                   "before their table lookups (cost columns and estimate).")
@click.option("--max-lookup-bits", type=click.IntRange(1, 32), metavar="N",
              help="FHE007: warn about table lookups wider than N bits (off unless given).")
@click.option("--fix", is_flag=True, help="Change the violating layers until they fit (see --fix-strategy).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="With --fix: write the fixed model here instead of over the input.")
@click.option("--max-prune", type=click.FloatRange(0, 100), default=90.0, show_default=True, metavar="PERCENT",
              help="With --fix: refuse to prune more than this share of any layer's weights.")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False), metavar="DATA.npy",
              help="Model inputs (.npy, or .npz): report the accumulator range they reach next to the "
                   "worst case, and, with --fix, how many predictions the fix changes.")
@click.option("--fix-strategy", type=click.Choice(FIX_STRATEGIES),
              help="With --fix: prune the smallest weights (default without --calibration); compensate "
                   "(re-solve the kept weights on the data); bits (fewer weight or input bits where the "
                   "advice says); auto (default with --calibration: try all, keep the one whose "
                   "predictions agree most with the original).")
@click.option("--max-damage", type=click.FloatRange(0, 100), default=5.0, show_default=True, metavar="PERCENT",
              help="With --fix and no --calibration: refuse a fix that changes more than this share of a "
                   "layer's weight energy (there is no data to measure what it costs).")
@click.option("--fix-order", type=click.Choice(["l1", "activation"]), default="l1", show_default=True,
              help="With --fix: prune smallest |w| first (l1), or smallest |w| x mean|x| on the "
                   "calibration data (activation).")
@click.option("--max-agreement-drop", type=click.FloatRange(0, 100), metavar="PERCENT",
              help="With --fix --calibration: refuse a fix that changes more than PERCENT of predictions.")
@click.option("--confirm", type=click.Choice(["layers", "network"]), is_flag=False, flag_value="layers",
              default=None, help="Compile with Concrete to prove the verdict: each layer's multi-sum "
                                 "(--confirm, needs fhe-lint[concrete]) or the whole model with Concrete ML "
                                 "(--confirm=network, needs concrete-ml).")
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Lint this many files in parallel processes.")
@click.option("--plot", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Draw per-layer and per-neuron accumulator bits against n_max (before and after "
                   "--fix) to FILE.png, .svg or a self-contained .html (needs fhe-lint[plot]).")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), metavar="FILE",
              help="Use this fhe-lint.toml or pyproject.toml for every model instead of the nearest one.")
@click.option("--isolated", is_flag=True, help="Ignore configuration files.")
@click.option("--show-settings", is_flag=True, help="Print the settings resolved for each file, and exit.")
@click.pass_context
def check(ctx: click.Context, paths: tuple[Path, ...], fmt: str, output_file: Path | None, layers: bool,
          per_neuron: bool, statistics: bool, quiet: bool, exit_zero: bool, fix: bool, output: Path | None,
          jobs: int, plot: Path | None, config_file: Path | None, isolated: bool, show_settings: bool,
          **options: object) -> None:
    """Lint quantized ONNX models for FHE accumulator overflow (QONNX, QDQ, QOperator, float).

    PATHS are model files, directories (every .onnx under them, minus `exclude`) or globs.
    Settings come from the nearest fhe-lint.toml or [tool.fhe-lint] in pyproject.toml above each
    model (or --config FILE); flags given here override them.
    """
    from fhe_lint import config
    from fhe_lint.discovery import discover
    from fhe_lint.report.emitters import emitter
    from fhe_lint.runner import run_files

    if output is not None and not fix:
        raise click.UsageError("--output is only meaningful with --fix")
    cli = {name.replace("-", "_"): value for name, value in options.items()
           if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    cli.pop("exclude", None)  # a walk's setting, added to the config's below
    try:
        explicit = None if isolated or config_file is None else config.load_config(config_file)

        def settings_for(path: Path) -> Settings:
            s = Settings(**cli) if isolated else config.resolve(path, cli, explicit)
            return dataclasses.replace(s, exclude=s.exclude + tuple(options["exclude"]))  # type: ignore[operator]

        def exclusion(directory: Path) -> tuple[Path, tuple[str, ...]]:
            s = settings_for(directory / "-")
            return (Path(s.source).parent if s.source else directory.resolve()), s.exclude

        found = discover(paths, exclusion)
        jobs_settings = [(path, settings_for(path)) for path in found.files]
    except FheLintError as e:
        error(str(e))
        sys.exit(EXIT_ERROR)
    if not found.files and not found.errors:  # a check that checked nothing must not pass
        error(found.warnings[0] if found.warnings else "no model to lint")
        sys.exit(EXIT_ERROR)
    for message in found.warnings:
        click.echo(f"fhe-lint: warning: {message}", err=True)
    if output is not None and len(jobs_settings) != 1:
        raise click.UsageError("--output takes exactly one input model")
    if show_settings:
        for path, s in jobs_settings:
            out(f"{path}: {_describe(s)}")
        return
    reports = run_files(jobs_settings, fix, output, jobs, progress=_progress)
    for message in found.errors + [r.error or r.incomplete for r in reports if r.error or r.incomplete]:
        error(message)
    try:
        if plot is not None:
            from fhe_lint.report import plot as plotting

            plotting.save(reports, plot)
        text = emitter(fmt)(reports, layers=layers, quiet=quiet, per_neuron=per_neuron, statistics=statistics,
                            color=output_file is None and _color(sys.stdout))
        if output_file is not None:
            from fhe_lint.io.model_io import write_atomic

            write_atomic(output_file, (text + "\n").encode())
        elif text:
            out(text, color=True)
    except FheLintError as e:
        error(str(e))
        sys.exit(EXIT_ERROR)
    if found.errors:
        sys.exit(EXIT_ERROR)
    code = _exit_code(reports)
    sys.exit(EXIT_CLEAN if exit_zero and code == EXIT_FINDINGS else code)


def _color(stream: object) -> bool:
    """Colour on a terminal, unless NO_COLOR is set; FORCE_COLOR wins (no-color.org, force-color.org)."""
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _progress(done: int, total: int, path: Path) -> None:
    """Long runs show they are alive (on a terminal only)."""
    from fhe_lint.runner import status

    status(f"{done}/{total} {path}" if done < total else None)


def _describe(s: Settings) -> str:
    """The resolved settings, in the units the config uses (max_prune and max_damage in percent)."""
    shown = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
    for name in ("select", "ignore", "extend_select", "extend_ignore"):
        shown[name] = sorted(shown[name])
    shown["exclude"] = list(s.exclude)
    shown["node_ignores"] = {glob: sorted(codes) for glob, codes in s.node_ignores}
    return json.dumps(shown)


def _exit_code(reports: list["FileReport"]) -> int:
    if any(r.error is not None or r.incomplete is not None for r in reports):
        return EXIT_ERROR
    return EXIT_FINDINGS if any(r.fails() for r in reports) else EXIT_CLEAN


@main.command("rule")
@click.argument("code")
def rule_cmd(code: str) -> None:
    """Explain one rule: what it checks, why it matters, an example and the fix."""
    from fhe_lint.rules import RULES

    rule = RULES.get(code.upper())
    if rule is None:
        raise click.BadParameter(f"unknown rule code {code!r} (known: {', '.join(RULES)})", param_hint="CODE")
    out(f"{rule.code} ({rule.name}) [{rule.severity.value}, fix: {rule.fix.value}]\n")
    out(rule.doc.split("\n", 1)[1].strip())


@main.command("rules")
def rules_cmd() -> None:
    """List every rule code with its default severity and summary."""
    from fhe_lint.rules import RULES

    for rule in RULES.values():
        out(f"{rule.code}  {rule.name:<22} {rule.severity.value:<8} {rule.summary}")


@main.command("calibrate-cost")
def calibrate_cost_cmd() -> None:
    """Time a few encrypted table lookups on this machine (two to three minutes; needs the
    concrete extra), so the seconds per inference every later lint estimates are this machine's instead
    of the shipped table's reference machine. Kept in $XDG_CACHE_HOME/fhe-lint (~/.cache)."""
    from fhe_lint.analysis.concrete_cost import calibrate
    from fhe_lint.analysis.estimate import calibration_file
    from fhe_lint.errors import FheLintError
    from fhe_lint.io.model_io import write_atomic

    try:
        result = calibrate(lambda step: click.echo(step, err=True))
        target = calibration_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, (json.dumps(result, indent=1) + "\n").encode())
    except (FheLintError, OSError) as e:
        error(str(e))
        sys.exit(EXIT_ERROR)
    out(f"{result['seconds_per_complexity_single']:.3g} s per unit of Concrete complexity for single "
        f"bootstraps, {result['seconds_per_complexity_decomposed']:.3g} for decomposed lookups "
        f"(concrete-python {result['concrete_python']}, {result['cores']} cores): wrote {target}")
