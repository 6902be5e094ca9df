"""Pictures of the headroom: per-layer accumulator bits against n_max (before and after a fix),
and each layer's per-neuron histogram. PNG/SVG via matplotlib (extra ``fhe-lint[plot]``); HTML
is one self-contained file with the SVG inline."""

from __future__ import annotations

import html
import io
from pathlib import Path

from fhe_lint.errors import FheLintError
from fhe_lint.report.model import FileReport

FORMATS = (".png", ".svg", ".html")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, smaller
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise FheLintError('--plot needs matplotlib (the "plot" extra): pip install matplotlib') from e
    return plt


def figure(reports: list[FileReport]):
    plt = _pyplot()
    shown = [r for r in reports if r.error is None and any(layer.neuron_bits for layer in r.layers)]
    fig, axes = plt.subplots(max(len(shown), 1), 2, figsize=(12, 3.6 * max(len(shown), 1)), squeeze=False)
    for (bars, hist), r in zip(axes, shown):
        n_max = r.settings.n_max
        analysed = [layer for layer in r.layers if layer.neuron_bits]
        names = [layer.node for layer in analysed]
        after = [max(layer.neuron_bits) for layer in analysed]
        before = r.fix.bits_before if r.fix is not None and r.fix.bits_before else None
        x = range(len(names))
        if before:
            old = [max(before.get(n, (0,))) for n in names]
            bars.bar([i - 0.2 for i in x], old, 0.4, color="#bbbbbb", label="before --fix")
            bars.bar([i + 0.2 for i in x], after, 0.4, color=["#d62728" if b > n_max else "#2ca02c" for b in after],
                     label="after --fix")
        else:
            bars.bar(list(x), after, 0.6, color=["#d62728" if b > n_max else "#2ca02c" for b in after])
        for i, b in enumerate(after):
            bars.annotate(f"{n_max - b:+d}", (i + (0.2 if before else 0), b), ha="center", va="bottom", fontsize=8)
        bars.axhline(n_max, color="black", linestyle="--", linewidth=1, label=f"n_max = {n_max}")
        bars.set_xticks(list(x), [n if len(n) <= 18 else "..." + n[-15:] for n in names], rotation=30, ha="right",
                        fontsize=8)
        bars.set_ylabel("accumulator bits (headroom above)")
        bars.set_title(f"{r.path.name}: worst case per layer")
        bars.legend(fontsize=8, loc="lower right")
        for layer in analysed:
            hist.hist(layer.neuron_bits, bins=range(1, max(max(after), n_max) + 3), histtype="step", label=layer.node)
        hist.axvline(n_max + 1, color="black", linestyle="--", linewidth=1)
        hist.set_xlabel("bits per neuron (right of the line: overflow)")
        hist.set_ylabel("neurons")
        hist.set_title("per-neuron worst case")
        hist.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(reports: list[FileReport], path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise FheLintError(f"--plot {path}: use a .png, .svg or .html file name")
    fig = figure(reports)
    from fhe_lint.io.model_io import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg" if suffix == ".html" else suffix[1:], dpi=110)
    _pyplot().close(fig)
    data = buffer.getvalue()
    if suffix == ".html":
        data = _html(reports, data.decode()).encode()
    write_atomic(path, data)


def _html(reports: list[FileReport], svg: str) -> str:
    svg = svg[svg.index("<svg"):]
    rows = "".join(
        f"<tr><td>{html.escape(str(r.path))}</td><td>{html.escape(layer.node)}</td><td>{layer.accumulator_bits}</td>"
        f"<td>{r.settings.n_max}</td></tr>"
        for r in reports if r.error is None for layer in r.layers
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fhe-lint report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
        f"<h1>fhe-lint: accumulator headroom</h1>{svg}"
        "<table><tr><th>model</th><th>layer</th><th>bits</th><th>n_max</th></tr>"
        f"{rows}</table></body></html>"
    )
