"""A Brevitas model's weighted layers, paired with the layers fhe-lint reads from its QONNX
export: the training guard bounds each through its pair, and both it and ``lint_module`` check
that the export holds the integer weights Brevitas trains with."""

from __future__ import annotations

from typing import Any

import numpy as np

from fhe_lint.analysis.accumulators import LayerAnalysis, ModelAnalysis
from fhe_lint.errors import FheLintError

LINEAR = ("QuantLinear", "QuantConv1d", "QuantConv2d", "QuantConv3d")  # weight output neuron first
# weight input channel first, and with a stride each output pixel reads only its phase's taps
TRANSPOSED = ("QuantConvTranspose1d", "QuantConvTranspose2d", "QuantConvTranspose3d")


def current_weight(module: Any) -> Any:
    """The weight as the next forward will see it (a pruned module's mask applied now, not at
    its next forward pre-hook)."""
    if hasattr(module, "weight_orig"):
        return module.weight_orig * module.weight_mask
    return module.weight


def stored_weight(module: Any) -> Any:
    """The parameter the optimizer trains (under a pruning mask, the unmasked one)."""
    return module.weight_orig if hasattr(module, "weight_orig") else module.weight


def learned_scale(module: Any) -> list[Any]:
    """The weight quantizer's scale parameters, where its scale is learned as one of its own
    (Brevitas's ``parameter_from_stats``) rather than computed from the weights."""
    return [p for name, p in module.weight_quant.named_parameters() if "scaling_impl" in name and p.requires_grad]


def levels(module: Any) -> np.ndarray:
    """``q_w - zp_w`` per neuron, ``(neurons, fan_in)``: the integers Brevitas trains with (and
    exports, :func:`check_exported_as_trained` says), of a :data:`LINEAR` layer."""
    import torch

    with torch.no_grad():
        if hasattr(module, "weight_orig"):
            module.weight = current_weight(module)
        q = module.quant_weight()
        d = torch.round(q.value / q.scale + q.zero_point) - torch.round(q.zero_point)
        return d.reshape(d.shape[0], -1).to(torch.int64).cpu().numpy()


def forward_order(model: Any, example_input: Any) -> list[tuple[str, Any]]:
    """The Brevitas weighted layers in the order a forward pass calls them (the export's order)."""
    import torch

    calls: list[tuple[str, Any]] = []
    handles = [m.register_forward_pre_hook(lambda mod, args, name=name: calls.append((name, mod)))
               for name, m in model.named_modules() if type(m).__name__ in LINEAR + TRANSPOSED]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    seen = [name for name, _ in calls]
    if len(set(seen)) != len(seen):
        raise FheLintError("a Brevitas layer is called more than once per forward pass: its bound is per call")
    return calls


def paired(model: Any, example_input: Any, analysis: ModelAnalysis) -> list[tuple[str, Any, LayerAnalysis]]:
    """Each Brevitas weighted layer (module path, module) with the export's layer it became, in
    the order a forward pass calls them (the export's)."""
    order = forward_order(model, example_input)
    exported = [la for la in analysis.layers if la.layer.weight is not None]
    if len(exported) != len(order):
        raise FheLintError(f"the export has {len(exported)} weighted layers, the model calls {len(order)} "
                           f"Brevitas layers ({', '.join(n for n, _ in order)}): cannot pair them")
    return [(name, module, la) for (name, module), la in zip(order, exported)]


# Brevitas divides in float32, fhe-lint's reader (as Concrete ML) in float64: a quotient within a
# float32 ulp of a half rounds the other way, about one weight level in a million on random layers
_TIES = 1e-4


def check_exported_as_trained(name: str, trained: np.ndarray, exported: np.ndarray) -> None:
    """Refuse a layer whose QONNX export holds other integer weights than Brevitas trains with:
    the guard would bound a model Concrete ML never compiles. Brevitas 0.13's weight-normalized
    quantizers (A2Q, A2Q+, ``Int8WeightNormL2PerChannelFixedPoint``) export the raw weight with
    the scale alone, their levels off by up to 119 on a random layer; a float32 tie is one level
    on rare weights."""
    if trained.shape != exported.shape:
        raise FheLintError(f"{name}: its weight is {trained.shape} per neuron, the export's "
                           f"{exported.shape}: cannot pair them")
    gap = np.abs(trained - exported)
    if gap.size and (gap.max() > 1 or np.count_nonzero(gap) > max(1, _TIES * gap.size)):
        raise FheLintError(f"{name}: Brevitas exports other integer weights than it trains with "
                           f"({np.count_nonzero(gap)} of {gap.size} levels differ, by up to {int(gap.max())}): "
                           "its weight quantizer does not export to QONNX as it computes (weight-normalized "
                           "ones such as A2Q do not), so Concrete ML would compile another model; train it with "
                           "one that does (Int8WeightPerTensorFloat, Int8WeightPerChannelFloat): the guard keeps "
                           "the accumulator bound itself")
