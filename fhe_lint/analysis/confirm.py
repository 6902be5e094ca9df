"""Proof by the compiler: Concrete itself reports each layer's accumulator bit-width.

Per layer, a concrete-python circuit of the integer multi-sum ``x @ d.T`` (encrypted input, clear
weights with the layer's real integer values) is compiled over an input set holding, for every
neuron, the input that reaches its upper and its lower worst case; a multi-sum alone compiles
past 16 bits, so an overflow is confirmed without a table lookup that cannot exist.
``network`` mode hands the whole model to Concrete ML's own compiler (``concrete-ml``).
concrete-python and concrete-ml are imported only here, only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis, ModelAnalysis, tap_range
from fhe_lint.analysis.concrete_cost import fhe as concrete_fhe, scratch
from fhe_lint.errors import FheLintError


def _rows(la: LayerAnalysis) -> np.ndarray:
    """Neuron rows; a strided ConvTranspose contributes one row per (neuron, phase)."""
    d = la.layer.weight.d.astype(np.int64)
    phases = la.layer.phases
    if phases is None:
        return d
    return np.concatenate([np.where(phases == p, d, 0) for p in np.unique(phases)])


def worst_case_inputs(d: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Per neuron (row), the input reaching its maximum, then the one reaching its minimum."""
    return np.concatenate([np.where(d > 0, hi, lo), np.where(d > 0, lo, hi)])


def confirm_layer(la: LayerAnalysis) -> int:
    """The bit-width Concrete assigns to the layer's accumulator over its worst-case inputs."""
    fhe = concrete_fhe("--confirm")
    d = _rows(la)
    x = tap_range(la.layer)
    weights = d.T.copy()

    def multi_sum(v):
        return v @ weights

    with scratch():
        circuit = fhe.Compiler(multi_sum, {"v": "encrypted"}).compile(list(worst_case_inputs(d, x.lo, x.hi)))
        return int(circuit.graph.ordered_outputs()[0].output.dtype.bit_width)


def confirm_layers(analysis: ModelAnalysis, progress=None) -> dict[str, int]:
    layers = [la for la in analysis.layers if la.bounds is not None and la.layer.weight is not None]
    out = {}
    for i, la in enumerate(layers, 1):
        if progress is not None:
            progress(i, len(layers), la.name)
        out[la.name] = confirm_layer(la)
    return out


@dataclass(frozen=True)
class NetworkResult:
    compiles: bool
    max_bitwidth: int | None
    error: str | None
    cost: dict[str, float] | None = None  # what the circuit reports: bootstraps, complexity, keys
    widths: dict[str, int] | None = None  # per layer, the accumulator bits Concrete ML compiled

    def as_json(self) -> dict[str, Any]:
        return {"compiles": self.compiles, "max_bitwidth": self.max_bitwidth, "error": self.error,
                **({"cost": self.cost} if self.cost is not None else {})}


def circuit_cost(circuit: Any) -> dict[str, float]:
    """The figures fhe-lint's estimate predicts, as Concrete reports them after compiling."""
    return {"tlu_count": int(circuit.statistics["programmable_bootstrap_count"]),
            "complexity": float(circuit.complexity),
            "bootstrap_key_bytes": int(circuit.size_of_bootstrap_keys),
            "keyswitch_key_bytes": int(circuit.size_of_keyswitch_keys)}


def first_layer_extremes(analysis: ModelAnalysis, shape: tuple[int, ...]) -> np.ndarray:
    """Float model inputs that drive the first layer's neurons to their worst cases, when that
    layer reads the model input through one per-tensor quantizer (else none)."""
    graph = analysis.graph
    first = next((la for la in analysis.layers if la.bounds is not None and la.layer.weight is not None), None)
    if first is None or first.layer.input.scale_zero_point is None or first.layer.op not in ("Gemm", "MatMul", "Conv"):
        return np.zeros((0, *shape), dtype=np.float32)
    quant = graph.producer.get(first.layer.node.input[0])
    if quant is None or quant.input[0] not in graph.inputs:
        return np.zeros((0, *shape), dtype=np.float32)
    scale, zp = first.layer.input.scale_zero_point
    x = first.layer.input.range
    ints = worst_case_inputs(first.layer.weight.d.astype(np.int64), x.lo, x.hi)
    if first.layer.op == "Conv":
        kernel = first.layer.weight.as_operand(first.layer.weight.source_values).shape[1:]
        if len(shape) != len(kernel) or any(s < k for s, k in zip(shape[1:], kernel[1:])):
            return np.zeros((0, *shape), dtype=np.float32)
        images = np.zeros((len(ints), *shape))
        region = (slice(None), slice(0, kernel[0]), *[slice(0, k) for k in kernel[1:]])
        images[region] = ints.reshape(len(ints), *kernel)
        ints = images
    elif ints.shape[1:] != tuple(shape):
        return np.zeros((0, *shape), dtype=np.float32)
    return ((ints - zp) * scale).astype(np.float32)


def confirm_network(analysis: ModelAnalysis, data: np.ndarray | None) -> NetworkResult:
    """Compile the whole model with Concrete ML (QAT import, the configured rounding), over the
    data plus worst cases."""
    try:
        from concrete.ml.torch.compile import compile_onnx_model
    except ImportError as e:
        raise FheLintError(f"--confirm=network needs Concrete ML: pip install concrete-ml ({e})") from e
    dims = [d.dim_value for d in analysis.graph.model.graph.input[0].type.tensor_type.shape.dim][1:]
    if data is None and not all(dims):
        raise FheLintError("--confirm=network needs --calibration data (the model input shape is not static)")
    shape = tuple(data.shape[1:]) if data is not None else tuple(dims)
    extremes = first_layer_extremes(analysis, shape)
    inputs = extremes if data is None else np.concatenate([data.astype(np.float32), extremes])
    if not len(inputs):
        raise FheLintError("--confirm=network needs --calibration data for this model")
    try:
        with scratch():
            module = compile_onnx_model(analysis.graph.standalone(), inputs, import_qat=True,
                                        rounding_threshold_bits=analysis.settings.rounding_bits)
            circuit = module.fhe_circuit
            widths = {name: int(op["bitwidth"]) for name, op in (module.bitwidth_and_range_report() or {}).items()}
            return NetworkResult(True, int(circuit.graph.maximum_integer_bit_width()), None, circuit_cost(circuit),
                                 widths)
    except Exception as e:  # noqa: BLE001 - the compiler's refusal is the result being reported
        return NetworkResult(False, None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
