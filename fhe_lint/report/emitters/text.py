"""Human output: one grep-able line per finding (per layer and rule, or per neuron), fix
outcomes, optional layer tables or rule statistics, and a summary that names what was suppressed."""

from __future__ import annotations

import math
from collections import Counter

from fhe_lint.analysis.rounding import advised_bits
from fhe_lint.diagnostics import Severity
from fhe_lint.report.findings import Finding, findings
from fhe_lint.report.model import FileReport
from fhe_lint.rules import RULES

_BOLD, _RED, _YELLOW, _RESET = "\033[1m", "\033[31m", "\033[33m", "\033[0m"


def _painted(f: Finding, color: bool) -> str:
    if not color:
        return f.line()
    hue = _RED if f.severity is Severity.ERROR else _YELLOW
    return f"{_BOLD}{f.location}{_RESET}: {_BOLD}{hue}{f.code}{_RESET} {f.message}"


def diagnostic_lines(r: FileReport, per_neuron: bool = False, color: bool = False) -> list[str]:
    lines = [_painted(f, color) for f in findings(r, per_neuron)]
    lines += [f"{r.path}:{layer.node}: confirm: Concrete reports {layer.confirmed_bits} bits, the static "
              f"bound {layer.accumulator_bits}" for layer in r.layers
              if layer.confirmed_bits is not None and layer.confirmed_bits != layer.accumulator_bits]
    if r.confirm_network is not None:
        n = r.confirm_network
        lines.append(f"{r.path}: Concrete ML compiles the model, max bit-width {n['max_bitwidth']}{_versus(r)}"
                     if n["compiles"] else f"{r.path}: Concrete ML cannot compile the model: {n['error']}")
    return lines + [f"{r.path}:{layer.node}: advice: {layer.advice.text}" for layer in r.layers
                    if layer.advice is not None and (r.fix is None or r.fix.refused)]


def _versus(r: FileReport) -> str:
    """Concrete's figures after the compile beside fhe-lint's prediction of them."""
    network = r.confirm_network or {}
    got, mine, e = network.get("cost"), r.fhe_cost(), network.get("estimate_at_these_widths")
    if got is None:
        return ""
    text = f"; {got['tlu_count']} bootstraps (fhe-lint: {mine['tlu_count']}), complexity {got['complexity']:.3g}"
    keys = (got["bootstrap_key_bytes"] + got["keyswitch_key_bytes"]) / 1e9
    if e is None:
        return text + f", keys {keys:.2f} GB"
    return text + (f" (fhe-lint at the widths it compiled: {e['complexity']:.3g}), keys {keys:.2f} GB"
                   f" (fhe-lint: {(e['bootstrap_key_bytes'] + e['keyswitch_key_bytes']) / 1e9:.2f} GB)")


def fix_lines(r: FileReport) -> list[str]:
    if r.fix is None:
        return []
    f = r.fix
    if f.refused:
        return [f"{r.path}: fix refused, file left untouched: {f.refused}"]
    if not f.pruned:
        target = f", copied unchanged to {f.written}" if f.written and f.written != str(r.path) else ""
        return [f"{r.path}: nothing to fix{target}"]
    cost = "" if f.agreement is None else (
        f"; on the calibration data {100 * f.agreement:.2f} % of predictions unchanged, "
        f"max output change {f.max_abs_change:.4g}")
    if f.strategy in (None, "prune"):
        detail = ", ".join(f"{node}: {n}" for node, n in f.pruned.items())
        return [f"{r.path}: fixed, pruned {sum(f.pruned.values())} weights ({detail}){cost}; wrote {f.written}"]
    return [f"{r.path}: fixed ({f.strategy}){cost}; wrote {f.written}"] + [
        f"{r.path}:{node}: {change(c)}" for node, c in (f.layers or {}).items()]


def change(c: dict) -> str:
    """One layer's change in words: bit-widths first (they change the most), then weights."""
    parts = [f"{what} {c[key][0]} -> {c[key][1]} bits" for key, what in (("weight_bits", "weights"),
                                                                        ("input_bits", "inputs")) if key in c]
    if "input_bits" in c:
        parts[-1] += f" (its quantizer {c['input_quantizer']} feeds every consumer of that tensor)"
    parts.append(f"{c['pruned']} weights pruned, {c['moved']} moved")
    if c.get("bias_corrected"):
        parts.append("bias corrected")
    return f"{c['strategy']}: " + ", ".join(parts)


def layer_table(r: FileReport) -> str:
    from tabulate import tabulate

    rows = []
    n_max = r.settings.n_max
    for j in r.layers:
        bits = j.accumulator_bits
        rows.append([
            j.node, j.op, j.neurons, j.fan_in, f"{j.weight_bits or '-'}/{j.input_bits or '-'}", j.omega, j.max_nonzero,
            "unknown" if j.accumulator_range is None else f"[{j.accumulator_range[0]}, {j.accumulator_range[1]}]",
            bits, None if bits is None else n_max - bits, j.tlu_count, j.tlu_bits,
        ])
    headers = ["node", "op", "neurons", "fan-in", "bits w/in", "Ω", "max nz", "range", "acc bits", "headroom",
               "TLUs", "TLU bits"]
    if any(j.confirmed for j in r.layers):
        headers.append("confirmed")
        for row, j in zip(rows, r.layers):
            row.append(j.confirmed_bits)
    if any(j.observed_range is not None for j in r.layers):
        headers += ["observed", "obs bits", "obs headroom"]
        for row, j in zip(rows, r.layers):
            o = j.observed_range
            row += [f"[{o[0]}, {o[1]}]", j.observed_bits, n_max - j.observed_bits] if o else [None] * 3
    cost = cost_line(r)
    return f"{r.path}\n" + tabulate(rows, headers=headers, missingval="-") + (f"\n{cost}" if cost else "")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def cost_line(r: FileReport) -> str | None:
    """The model's FHE cost in one sentence (estimated from Concrete's own figures)."""
    c, e = r.fhe_cost(), r.estimate
    if c["tlu_count"] is None:
        return None
    text = (f"FHE cost: {c['tlu_count']} bootstraps of up to {c['max_tlu_bits'] or '-'} bits per inference"
            f" ({c['widths']} widths, circuit {c['max_bits'] or '?'} bits)")
    if e is not None and c["tlu_count"]:
        keys = e.key_bytes / 1e9
        text += (f"; complexity {e.complexity:.2g}, keys {keys:.2g} GB, {_duration(e.seconds)} on "
                 f"{e.seconds_from.split(' (')[0]} (estimated from Concrete {e.concrete}'s figures at p_error "
                 f"2^{math.log2(e.p_error):.0f})")
        if e.alternative is not None:
            a = e.alternative
            kind = "decomposes every lookup" if a.decomposed else "keeps one bootstrap per lookup"
            text += (f"; close call: if Concrete {kind}, complexity {a.complexity:.2g} and keys"
                     f" {a.key_bytes / 1e9:.2g} GB")
        if e.beyond_table:
            text += ", lookups wider than the table: a lower bound"
    rounded = r.rounded_estimate
    if rounded is not None and r.rounding and e is not None and c["rounding_bits"] is None \
            and rounded.complexity < 0.9 * e.complexity:
        text += (f"\nrounding advice: --rounding-bits {advised_bits(r.rounding)} (Concrete ML's rounding_threshold_bits) moves no"
                 f" layer's output by more than a quarter level of the next quantizer on this data and cuts the"
                 f" estimate to complexity {rounded.complexity:.2g}, {_duration(rounded.seconds)}")
    return text


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def statistics_lines(reports: list[FileReport]) -> list[str]:
    """Per rule, as ruff and flake8 print them: neurons (or nodes) found, then in how many layers."""
    found = [d for r in reports for d in r.diagnostics]
    per_code = Counter(d.code for d in found)
    layers = Counter(code for code, _ in {(d.code, (str(r.path), d.node)) for r in reports for d in r.diagnostics})
    return [f"{per_code[code]:>6}  {code}  {RULES[code].name:<22} {_count(layers[code], 'layer')}"
            for code in RULES if per_code[code]]


def summary_line(reports: list[FileReport], per_neuron: bool = False) -> str:
    files = _count(len(reports), "file")
    failed = sum(r.error is not None for r in reports)
    grouped = [f for r in reports for f in findings(r, per_neuron)]
    hidden: Counter[str] = Counter()
    for r in reports:
        hidden.update(dict(r.suppressed))
    suppressed = "" if not hidden else (
        f" {_count(sum(hidden.values()), 'finding')} suppressed ("
        + ", ".join(f"{n} by {source}" for source, n in hidden.items()) + ").")
    if not grouped and not failed:
        return f"All checks passed ({files}).{suppressed}"

    def part(severity: Severity, noun: str) -> str:
        mine = [f for f in grouped if f.severity is severity]
        neurons = sum(len(f.diagnostics) for f in mine if f.neuron is None and f.diagnostics[0].neuron is not None)
        grouped_more = any(len(f.diagnostics) > 1 for f in mine)
        return _count(len(mine), noun) + (f" ({_count(neurons, 'neuron')})" if grouped_more else "")

    could_not = f", {failed} could not be analysed" if failed else ""
    return (f"Found {part(Severity.ERROR, 'error')} and {part(Severity.WARNING, 'warning')} in {files}"
            f"{could_not}.{suppressed}")


def emit(reports: list[FileReport], *, layers: bool = False, quiet: bool = False, per_neuron: bool = False,
         statistics: bool = False, color: bool = False, **_: object) -> str:
    lines: list[str] = []
    for r in reports:
        if not statistics:
            lines += diagnostic_lines(r, per_neuron, color)
        lines += fix_lines(r)
        if layers and r.error is None:
            lines.append(layer_table(r))
    if statistics:
        lines += statistics_lines(reports)
    if not quiet:
        lines.append(summary_line(reports, per_neuron))
    return "\n".join(lines)
