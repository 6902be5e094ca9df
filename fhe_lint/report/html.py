"""The ``--plot FILE.html`` report: one self-contained page (no script, no external resource)
with the figure inline and, per model, a table of every layer: bits before and after a fix,
headroom, what the fix changed, the findings and the bit-width advice. Models that could not be
analysed are listed with the reason, so nothing is silently missing from the page."""

from __future__ import annotations

from html import escape

from fhe_lint.report.emitters.text import change, cost_line, summary_line
from fhe_lint.report.findings import findings
from fhe_lint.report.model import FileReport, LayerReport
from fhe_lint.report.plot import bits_before

_STYLE = ("body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
          "td.num{text-align:right}tr.over td{background:#fde8e8}th{background:#f4f4f4}"
          "svg{max-width:100%;height:auto}.error{color:#b00}")


def _cell(value: object, numeric: bool = False) -> str:
    shown = "-" if value is None else escape(str(value))
    return f"<td class='num'>{shown}</td>" if numeric else f"<td>{shown}</td>"


def _changed(r: FileReport, node: str) -> str | None:
    """What the fix did to one layer, in the words of the text report."""
    if r.fix is None or r.fix.refused:
        return None
    layer = (r.fix.layers or {}).get(node)
    if layer is not None:
        return change(layer)
    pruned = r.fix.pruned.get(node)
    return f"{pruned} weights pruned" if pruned else None


def _rows(r: FileReport) -> str:
    by_node: dict[str | None, list[str]] = {}
    for f in findings(r):
        by_node.setdefault(f.node, []).append(f"{f.code} {f.message}")
    fixed = r.fix is not None and bool(r.fix.bits_before)
    out = []
    for layer in r.layers:
        bits = layer.accumulator_bits
        over = bits is not None and bits > r.settings.n_max
        cells = [_cell(layer.node), _cell(layer.op), _cell(layer.neurons, True)]
        if fixed:
            cells.append(_cell(bits_before(r, layer), True))
        cells += [_cell(bits, True), _cell(None if bits is None else r.settings.n_max - bits, True),
                  _cell(layer.tlu_count, True), _cell(layer.tlu_bits, True)]
        if r.fix is not None:
            cells.append(_cell(_changed(r, layer.node)))
        cells += [_cell("; ".join(by_node.get(layer.node, [])) or None), _cell(_advice(layer))]
        out.append(f"<tr data-layer='{escape(layer.node, quote=True)}'{' class=over' if over else ''}>"
                   + "".join(cells) + "</tr>")
    return "".join(out)


def _advice(layer: LayerReport) -> str | None:
    return layer.advice.text if layer.advice is not None else None


def _table(r: FileReport) -> str:
    headers = ["layer", "op", "neurons"]
    if r.fix is not None and r.fix.bits_before:
        headers.append("bits before --fix")
    headers += ["bits after --fix" if r.fix is not None else "bits", "headroom", "table lookups", "lookup bits"]
    if r.fix is not None:
        headers.append("fix")
    headers += ["findings", "advice"]
    fix = ""
    if r.fix is not None:
        fix = (f"<p class='error'>fix refused: {escape(r.fix.refused)}</p>" if r.fix.refused
               else f"<p>fixed ({escape(r.fix.strategy or 'prune')}); written to {escape(str(r.fix.written))}</p>")
    cost = "".join(f"<p class='cost'>{escape(line)}</p>" for line in (cost_line(r) or "").splitlines())
    return (f"<h2>{escape(str(r.path))}</h2><p>n_max {r.settings.n_max}</p>{fix}"
            f"<table data-model='{escape(str(r.path), quote=True)}'>"
            f"<tr>{''.join(f'<th>{escape(h)}</th>' for h in headers)}</tr>{_rows(r)}</table>{cost}")


def page(reports: list[FileReport], svg: str) -> str:
    svg = svg[svg.index("<svg"):]
    failed = [r for r in reports if r.error is not None]
    unreadable = "" if not failed else (
        "<h2>Could not be analysed</h2><ul>" + "".join(f"<li class='error'>{escape(r.error or '')}</li>"
                                                        for r in failed) + "</ul>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fhe-lint report</title>"
        f"<style>{_STYLE}</style></head><body><h1>fhe-lint: accumulator headroom</h1>"
        f"<p>{escape(summary_line(reports))}</p>{svg}"
        + "".join(_table(r) for r in reports if r.error is None) + unreadable + "</body></html>"
    )
