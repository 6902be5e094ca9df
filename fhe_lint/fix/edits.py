"""What a fix changes in a model, whatever the strategy that chose it: new weight levels at
some positions, and where needed a re-gridded quantizer or a corrected bias."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis
from fhe_lint.io.onnx_proto import NodeProto


@dataclass(frozen=True)
class QuantizerEdit:
    """A quantizer put on a coarser grid: a new scale and, for QONNX, a new bit-width (None: the
    container type stays, only the levels used shrink)."""

    node: NodeProto  # in the analysed (unfixed) graph
    scale: np.ndarray  # in the dtype the model stores it in
    bits: int | None
    bits_before: int
    scale_input: int = 1  # which input of ``node`` holds the scale (a QOperator layer's own: 4)


@dataclass(frozen=True)
class LayerEdit:
    """One layer's change: where ``flags`` (``np.packbits`` of one flag per element of the weight's
    constant, flat) are set, the levels ``q - zp`` become ``levels``, given in flat order (None:
    add nothing, i.e. pruning). A bit per weight, not a position: a fix that prunes most of a
    large model holds an eighth of a byte per weight rather than four or eight."""

    layer: LayerAnalysis
    flags: np.ndarray
    levels: np.ndarray | None = None
    strategy: str = "prune"
    pruned: int = 0  # taps that now add nothing and did before
    moved: int = 0  # taps given another non-zero level
    weight_quantizer: QuantizerEdit | None = None
    input_quantizer: QuantizerEdit | None = None
    bias_delta: np.ndarray | None = None  # per neuron, in the output's real units

    @classmethod
    def of(cls, layer: LayerAnalysis, mask: np.ndarray, levels: np.ndarray | None = None, **fields) -> LayerEdit:
        """The edit of the taps ``mask`` flags (flat, one per element of the constant)."""
        return cls(layer, np.packbits(mask), levels, **fields)

    @classmethod
    def at(cls, layer: LayerAnalysis, positions: np.ndarray, levels: np.ndarray | None = None,
           **fields) -> LayerEdit:
        """The edit of the taps at flat ``positions`` (distinct, in any order) of the constant."""
        mask = np.zeros(layer.layer.weight.source_values.size, dtype=bool)
        mask[positions] = True
        if levels is not None:
            levels = levels[np.argsort(positions, kind="stable")]
        return cls.of(layer, mask, levels, **fields)

    def mask(self, part: slice | None = None) -> np.ndarray:
        """The flags as booleans, of the whole constant or of ``part`` (starting at a multiple of 8)."""
        size = self.layer.layer.weight.source_values.size
        start, stop = (0, size) if part is None else (part.start, min(part.stop, size))
        return np.unpackbits(self.flags[start // 8:-(-stop // 8)], count=stop - start).view(bool)

    @property
    def fraction(self) -> float:
        """Share of the layer's weights pruned."""
        return self.pruned / max(self.layer.layer.weight.d.size, 1)

    def as_json(self) -> dict:
        out: dict = {"strategy": self.strategy, "pruned": self.pruned, "moved": self.moved}
        for key, q in (("weight_bits", self.weight_quantizer), ("input_bits", self.input_quantizer)):
            if q is not None and q.bits is not None:
                out[key] = [q.bits_before, q.bits]
        if self.input_quantizer is not None:
            out["input_quantizer"] = self.layer.layer.input.quantizers[0]
        if self.bias_delta is not None:
            out["bias_corrected"] = True
        return out


def changed(old: np.ndarray, new: np.ndarray) -> tuple[int, int]:
    """``(pruned, moved)`` between two level arrays of the same taps."""
    pruned = int(np.count_nonzero((old != 0) & (new == 0)))
    return pruned, int(np.count_nonzero((old != new) & (new != 0)))
