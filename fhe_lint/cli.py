"""The command line: the one place where errors become messages and findings become exit codes.

Exit codes (ruff/flake8 style): 0 clean or warnings only, 1 at least one error (any finding with
--strict, or a refused fix), 2 usage error or a model that could not be read or analysed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fhe_lint import __version__
from fhe_lint.errors import FheLintError

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _DefaultCheckGroup(click.Group):
    """``fhe-lint MODEL...`` means ``fhe-lint check MODEL...``, as the main job should be short."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["check", *args]
        return super().parse_args(ctx, args)


def _codes(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> frozenset[str]:
    from fhe_lint.rules import RULES

    codes = {c.strip().upper() for v in value for c in v.split(",") if c.strip()}
    unknown = sorted(codes - set(RULES))
    if unknown:
        raise click.BadParameter(f"unknown rule code {unknown[0]} (known: {', '.join(RULES)})")
    return frozenset(codes)


@click.group(cls=_DefaultCheckGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="Options of the lint itself: fhe-lint check --help. Exit codes: 0 clean or warnings "
                    "only, 1 errors (or any finding with --strict), 2 usage error or unreadable model.")
@click.version_option(__version__, prog_name="fhe-lint")
def main() -> None:
    """Check that quantized ONNX models fit Concrete ML's 16-bit accumulators, and fix them.

    \b
      fhe-lint model.onnx                  lint (same as: fhe-lint check model.onnx)
      fhe-lint model.onnx --layers         per-layer table with headroom
      fhe-lint model.onnx --fix -o out.onnx   prune the violating neurons
      fhe-lint rule FHE001                 explain a rule
    """


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--n-max", type=click.IntRange(1, 64), default=16, show_default=True,
              help="Largest accumulator bit-width Concrete can look up.")
@click.option("--multiplier", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="FHE002 keeps floor(Omega x multiplier) non-zero weights per neuron.")
@click.option("--strict", is_flag=True, help="Warnings fail the run (exit 1); --fix also enforces FHE002.")
@click.option("--select", multiple=True, callback=_codes, metavar="CODES",
              help="Only these rule codes (comma-separated, repeatable).")
@click.option("--ignore", multiple=True, callback=_codes, metavar="CODES",
              help="Skip these rule codes (comma-separated, repeatable).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format; json follows the versioned report contract.")
@click.option("--layers", is_flag=True, help="Also print a table of every linear layer (text format).")
@click.option("-q", "--quiet", is_flag=True, help="Print only findings, no summary.")
@click.option("--weight-bits", type=click.IntRange(1, 32), metavar="N",
              help="Float models: quantize unquantized weights as Concrete ML's post-training "
                   "quantization does (symmetric, per tensor, N bits).")
@click.option("--input-bits", type=click.IntRange(1, 32), metavar="N",
              help="Float models: unquantized layer inputs are N-bit unsigned integers.")
@click.option("--fix", is_flag=True, help="Prune the smallest weights of violating neurons until they fit.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="With --fix: write the fixed model here instead of over the input.")
@click.option("--max-prune", type=click.FloatRange(0, 100), default=90.0, show_default=True, metavar="PERCENT",
              help="With --fix: refuse to prune more than this share of any layer's weights.")
def check(files: tuple[Path, ...], n_max: int, multiplier: float, strict: bool, select: frozenset[str],
          ignore: frozenset[str], fmt: str, layers: bool, quiet: bool, weight_bits: int | None,
          input_bits: int | None, fix: bool, output: Path | None, max_prune: float) -> None:
    """Lint quantized ONNX models (QONNX / Brevitas exports) for FHE accumulator overflow."""
    from fhe_lint import reporters
    from fhe_lint.settings import Settings

    if output is not None and not fix:
        raise click.UsageError("--output is only meaningful with --fix")
    if output is not None and len(files) != 1:
        raise click.UsageError("--output takes exactly one input model")
    settings = Settings(n_max=n_max, multiplier=multiplier, strict=strict, select=select, ignore=ignore,
                        max_prune=max_prune / 100, weight_bits=weight_bits, input_bits=input_bits)
    reports = [_run_one(path, settings, fix, output) for path in files]

    for r in reports:
        if r.error is not None:
            click.echo(f"fhe-lint: error: {r.error}", err=True)
    if fmt == "json":
        click.echo(reporters.to_json(reports, settings))
    else:
        for r in reports:
            for line in reporters.diagnostic_lines(r) + reporters.fix_lines(r):
                click.echo(line)
            if layers and r.result is not None:
                click.echo(reporters.layer_table(r, settings.n_max))
        if not quiet:
            click.echo(reporters.summary_line(reports))
    sys.exit(_exit_code(reports, strict))


def _run_one(path: Path, settings, fix: bool, output: Path | None):
    from fhe_lint import reporters
    from fhe_lint.linter import lint_model
    from fhe_lint.model_io import has_external_data, read_model, write_atomic

    try:
        model = read_model(path)
        result = lint_model(model, path, settings)
        if not fix:
            return reporters.FileReport(path, result)
        from fhe_lint.fix import fix_model

        if has_external_data(model):
            raise FheLintError(f"{path}: --fix does not rewrite models with external data yet")
        outcome = fix_model(model, result)
        target = output or path
        if outcome.refused:
            return reporters.FileReport(path, outcome.result, fix=outcome)
        if outcome.model is not None:
            write_atomic(target, outcome.model.SerializeToString())
        elif output is not None:
            write_atomic(output, path.read_bytes())  # a clean model is copied byte for byte
        else:
            target = None
        return reporters.FileReport(path, outcome.result, fix=outcome, written=target)
    except FheLintError as e:
        message = str(e)
        return reporters.FileReport(path, error=message if message.startswith(str(path)) else f"{path}: {message}")
    except MemoryError:
        return reporters.FileReport(path, error=f"{path}: out of memory while analysing the model")
    except Exception as e:  # noqa: BLE001 - a linter must report, not crash, on any model
        return reporters.FileReport(path, error=f"{path}: cannot analyse this model ({type(e).__name__}: {e})")


def _exit_code(reports, strict: bool) -> int:
    if any(r.error is not None for r in reports):
        return EXIT_ERROR
    failing = any(
        r.result.fails(strict) or (r.fix is not None and r.fix.refused is not None) for r in reports
    )
    return EXIT_FINDINGS if failing else EXIT_CLEAN


@main.command("rule")
@click.argument("code")
def rule_cmd(code: str) -> None:
    """Explain one rule: what it checks, why it matters, an example and the fix."""
    from fhe_lint.rules import RULES

    rule = RULES.get(code.upper())
    if rule is None:
        raise click.BadParameter(f"unknown rule code {code!r} (known: {', '.join(RULES)})", param_hint="CODE")
    click.echo(f"{rule.code} ({rule.name}) [{rule.severity.value}, fix: {rule.fix.value}]\n")
    click.echo(rule.doc.split("\n", 1)[1].strip())


@main.command("rules")
def rules_cmd() -> None:
    """List every rule code with its default severity and summary."""
    from fhe_lint.rules import RULES

    for rule in RULES.values():
        click.echo(f"{rule.code}  {rule.name:<22} {rule.severity.value:<8} {rule.summary}")
