"""Pictures of the headroom: per-layer accumulator bits against n_max (before and after a fix),
and each layer's per-neuron histogram. PNG/SVG via matplotlib (the ``plot`` extra); HTML is one
self-contained page with the SVG inline and a table per model (``report.html``).

Every bar carries an SVG id (``bar-F-L`` after, ``bar-before-F-L``; ``axes-F`` and ``limit-F`` for
its axes and n_max line) so a browser test can find each layer's bar and check, on a screenshot,
that nothing covers it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fhe_lint.errors import FheLintError
from fhe_lint.report.model import FileReport, LayerReport

FORMATS = (".png", ".svg", ".html")
FITS, OVERFLOWS, BEFORE = "#2ca02c", "#d62728", "#bbbbbb"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, smaller
        matplotlib.rcParams["svg.hashsalt"] = "fhe-lint"  # stable ids: the same report, the same bytes
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise FheLintError('--plot needs matplotlib (the "plot" extra): pip install matplotlib') from e
    return plt


def drawn(reports: list[FileReport]) -> list[FileReport]:
    """The reports with at least one layer whose range is known: the only ones worth a picture."""
    return [r for r in reports if r.error is None and any(layer.neuron_bits for layer in r.layers)]


def analysed(r: FileReport) -> list[LayerReport]:
    return [layer for layer in r.layers if layer.neuron_bits]


def bits_before(r: FileReport, layer: LayerReport) -> int | None:
    """A layer's worst-case bits before ``--fix`` (None without a fix)."""
    before = r.fix.bits_before if r.fix is not None else None
    return max(before[layer.node]) if before and layer.node in before else None


def figure(reports: list[FileReport]) -> Any:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    shown = drawn(reports)
    fig, axes = plt.subplots(len(shown), 2, figsize=(13, 3.8 * len(shown)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for f, ((bars, hist), r) in enumerate(zip(axes, shown)):
        n_max, layers = r.settings.n_max, analysed(r)
        after = [max(layer.neuron_bits) for layer in layers]
        before = [bits_before(r, layer) for layer in layers]
        fixed = any(b is not None for b in before)
        width, shift = (0.38, 0.2) if fixed else (0.6, 0.0)
        for i, (a, b) in enumerate(zip(after, before)):
            if fixed:
                bars.bar(i - shift, b if b is not None else a, width, color=BEFORE,
                         label="before --fix" if i == 0 else None).patches[0].set_gid(f"bar-before-{f}-{i}")
            bars.bar(i + shift, a, width, color=OVERFLOWS if a > n_max else FITS,
                     label=("after --fix" if fixed else "worst case") if i == 0 else None).patches[0].set_gid(f"bar-{f}-{i}")
            bars.annotate(f"{n_max - a:+d}", (i + shift, a), ha="center", va="bottom", fontsize=8)
        bars.axhline(n_max, color="black", linestyle="--", linewidth=1, label=f"n_max = {n_max}").set_gid(f"limit-{f}")
        bars.patch.set_gid(f"axes-{f}")
        every = [b for b in after + before if b is not None] + [n_max]
        # the axis starts near the data, not at 0, so that a one-bit difference is visible
        bars.set_ylim(max(0, min(every) - 3), max(every) + 1.5)
        bars.yaxis.set_major_locator(MaxNLocator(integer=True))
        bars.set_xticks(range(len(layers)), [_short(layer.node) for layer in layers], rotation=30, ha="right",
                        fontsize=8)
        bars.set_ylabel("accumulator bits")
        bars.set_title(f"{r.path.name}: worst case per layer (label: headroom)")
        bars.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.5)
        _histogram(hist, layers, n_max, "after --fix" if fixed else "no fix")
    fig.tight_layout()
    return fig


def _histogram(hist: Any, layers: list[LayerReport], n_max: int, state: str) -> None:
    """Neurons per bit-width, one outline per layer, on integer-centred bins so that the n_max
    line sits on n_max itself: a neuron left of or on it fits, right of it overflows."""
    from matplotlib.ticker import MaxNLocator

    every = [b for layer in layers for b in layer.neuron_bits]
    lo, hi = min(every + [n_max]), max(every + [n_max])
    edges = [b - 0.5 for b in range(lo, hi + 2)]
    for layer in layers:
        hist.hist(layer.neuron_bits, bins=edges, histtype="step", linewidth=1.5, label=_short(layer.node))
    hist.axvline(n_max, color="black", linestyle="--", linewidth=1, label=f"n_max = {n_max}")
    hist.xaxis.set_major_locator(MaxNLocator(integer=True))
    hist.yaxis.set_major_locator(MaxNLocator(integer=True))
    hist.set_xlabel("worst-case bits per neuron (right of n_max: overflow)")
    hist.set_ylabel("neurons")
    hist.set_title(f"per-neuron worst case, {state}")
    hist.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.5)


def _short(name: str) -> str:
    return name if len(name) <= 18 else "..." + name[-15:]


def save(reports: list[FileReport], path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise FheLintError(f"--plot {path}: use a .png, .svg or .html file name")
    if not drawn(reports):
        raise FheLintError(f"--plot {path}: no model with a layer of known range to draw; nothing written")
    fig = figure(reports)
    from fhe_lint.io.model_io import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="svg" if suffix == ".html" else suffix[1:], dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    data = buffer.getvalue()
    if suffix == ".html":
        from fhe_lint.report.html import page

        data = page(reports, data.decode()).encode()
    write_atomic(path, data)
