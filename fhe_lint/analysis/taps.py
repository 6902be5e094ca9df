"""What each weight tap multiplies on real data: a layer's input laid out as rows of taps.

A neuron's output on one sample (one output position of a Conv) is ``X[r] @ w`` with ``w`` the
neuron's row of the weight's ``(neurons, fan_in)`` layout; the fixes that look at data (the
activation-aware order, error compensation) all start from these matrices.
"""

from __future__ import annotations

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis
from fhe_lint.errors import UnsupportedModelError
from fhe_lint.formats.graph import attr
from fhe_lint.formats.channels_last import is_channels_last
from fhe_lint.formats.layers import SPECS, spec_key

MAX_ROWS = 1 << 15  # rows kept per layer: second moments of K taps need far fewer than K^2 rows


def data_input(la: LayerAnalysis) -> str:
    spec = SPECS[spec_key(la.layer.node)]
    return la.layer.node.input[spec.data_of[la.layer.weight.operand]]


def tap_groups(la: LayerAnalysis, x: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(neurons, X)`` per group of neurons that read the same inputs: ``X`` is ``(rows, fan_in)``
    in float64, rows evenly thinned to at most :data:`MAX_ROWS`."""
    layer, operand = la.layer, la.layer.weight.operand
    neurons, fan_in = layer.weight.d.shape
    x = np.asarray(x, dtype=np.float64)
    if layer.op == "Conv":
        if is_channels_last(layer.node):
            x = np.moveaxis(x, -1, 1)  # NHWC -> NCHW: the weight's layout
        return _conv_groups(la, x, neurons, fan_in)
    if layer.op == "Gemm":
        trans = attr(layer.node, "transA" if operand == 1 else "transB", 0)
        rows = (x.T if trans else x) if operand == 1 else (x if trans else x.T)
    elif layer.op == "MatMul" and layer.weight.source_values.ndim <= 2:
        rows = x.reshape(-1, x.shape[-1]) if operand == 1 else np.swapaxes(x, -1, -2).reshape(-1, x.shape[-2])
    else:
        raise UnsupportedModelError(f"{la.name}: {layer.op} inputs cannot be laid out as taps")
    return [(np.arange(neurons), _thin(rows))]


def _thin(rows: np.ndarray) -> np.ndarray:
    if len(rows) <= MAX_ROWS:
        return rows
    return rows[np.linspace(0, len(rows) - 1, MAX_ROWS).astype(np.intp)]


def _conv_groups(la: LayerAnalysis, x: np.ndarray, neurons: int, fan_in: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """im2col: every output position's receptive field, ordered as the weight's ``(C/g, *kernel)``."""
    node = la.layer.node
    shape = la.layer.weight.source_values.shape
    kernel = shape[1:-1] if is_channels_last(node) else shape[2:]
    spatial = len(kernel)
    strides = attr(node, "strides") or [1] * spatial
    dilations = attr(node, "dilations") or [1] * spatial
    pads = attr(node, "pads") or [0] * (2 * spatial)
    auto = attr(node, "auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        raise UnsupportedModelError(f"{la.name}: auto_pad {auto} inputs cannot be laid out as taps")
    if auto == "VALID":
        pads = [0] * (2 * spatial)
    groups = attr(node, "group", 1) or 1
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    window = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=tuple(range(2, 2 + spatial)))
    # (N, C, *out, *window) -> strided outputs, dilated taps
    view = view[(slice(None), slice(None), *[slice(None, None, s) for s in strides],
                 *[slice(None, None, d) for d in dilations])]
    n, c = view.shape[:2]
    out_positions = int(np.prod(view.shape[2:2 + spatial]))
    per_group = c // groups
    found = []
    for g in range(groups):
        part = view[:, g * per_group:(g + 1) * per_group]
        # (N, C/g, *out, *k) -> (N, *out, C/g, *k) -> rows of fan_in taps
        order = (0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
        rows = _thin(part.transpose(order).reshape(n * out_positions, -1))
        if rows.shape[1] != fan_in:
            raise UnsupportedModelError(f"{la.name}: receptive field of {rows.shape[1]} taps, weight has {fan_in}")
        found.append((np.arange(g * (neurons // groups), (g + 1) * (neurons // groups)), np.ascontiguousarray(rows)))
    return found
