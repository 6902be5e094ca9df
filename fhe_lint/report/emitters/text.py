"""Human output: one grep-able line per finding, fix outcomes, optional layer tables, a summary."""

from __future__ import annotations

from fhe_lint.report.model import FileReport, location, summary


def diagnostic_lines(r: FileReport) -> list[str]:
    lines = [f"{location(r.path, d)}: {d.code} {d.message}" for d in r.diagnostics]
    lines += [f"{r.path}:{layer.node}: confirm: Concrete reports {layer.confirmed_bits} bits, the static "
              f"bound {layer.accumulator_bits}" for layer in r.layers
              if layer.confirmed_bits is not None and layer.confirmed_bits != layer.accumulator_bits]
    if r.confirm_network is not None:
        n = r.confirm_network
        lines.append(f"{r.path}: Concrete ML compiles the model, max bit-width {n['max_bitwidth']}" if n["compiles"]
                     else f"{r.path}: Concrete ML cannot compile the model: {n['error']}")
    return lines + [f"{r.path}:{layer.node}: advice: {layer.advice.text}" for layer in r.layers
                    if layer.advice is not None and (r.fix is None or r.fix.refused)]


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
        f"{r.path}:{node}: {_change(c)}" for node, c in (f.layers or {}).items()]


def _change(c: dict) -> str:
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
            j.node, j.op, j.neurons, j.fan_in, f"{j.weight_bits}/{j.input_bits}", j.omega, j.max_nonzero,
            "unknown" if j.accumulator_range is None else f"[{j.accumulator_range[0]}, {j.accumulator_range[1]}]",
            bits, None if bits is None else n_max - bits,
        ])
    headers = ["node", "op", "neurons", "fan-in", "bits w/in", "Ω", "max nz", "range", "acc bits", "headroom"]
    if any(j.confirmed for j in r.layers):
        headers.append("confirmed")
        for row, j in zip(rows, r.layers):
            row.append(j.confirmed_bits)
    if any(j.observed_range is not None for j in r.layers):
        headers += ["observed", "obs bits", "obs headroom"]
        for row, j in zip(rows, r.layers):
            o = j.observed_range
            row += [f"[{o[0]}, {o[1]}]", j.observed_bits, n_max - j.observed_bits] if o else [None] * 3
    return f"{r.path}\n" + tabulate(rows, headers=headers, missingval="-")


def summary_line(reports: list[FileReport]) -> str:
    s = summary(reports)
    files = f"{s['files']} file{'s' if s['files'] != 1 else ''}"
    failed = f", {s['failed_to_analyse']} could not be analysed" if s["failed_to_analyse"] else ""
    if not s["errors"] and not s["warnings"] and not s["failed_to_analyse"]:
        return f"All checks passed ({files})."
    return f"Found {s['errors']} error(s) and {s['warnings']} warning(s) in {files}{failed}."


def emit(reports: list[FileReport], *, layers: bool = False, quiet: bool = False, **_: object) -> str:
    lines: list[str] = []
    for r in reports:
        lines += diagnostic_lines(r) + fix_lines(r)
        if layers and r.error is None:
            lines.append(layer_table(r))
    if not quiet:
        lines.append(summary_line(reports))
    return "\n".join(lines)
