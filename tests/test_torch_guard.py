"""fhe_lint.torch: the training guard's bound is the CLI's bound on the exported model, a step
makes every neuron fit and leaves fitting neurons alone, finalize leaves a plain model that
exports and lints clean. Needs the torch extra; without it here, the tests run in the
interpreter FHE_LINT_TORCH_PYTHON names (CI: the Concrete environment, which has torch)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
try:
    import brevitas.nn as qnn
    import torch
    from torch import nn
except ImportError:  # the extra is elsewhere, or nowhere
    torch = None

OTHER = os.environ.get("FHE_LINT_TORCH_PYTHON")
in_process = pytest.mark.skipif(torch is None, reason="torch/brevitas (fhe-lint[torch]) not installed here")


@pytest.mark.skipif(torch is not None or not OTHER, reason="the torch extra is installed here (or nowhere)")
def test_in_the_torch_environment():
    env = {k: v for k, v in os.environ.items() if k != "FHE_LINT_TORCH_PYTHON"}  # no second hop
    p = subprocess.run([OTHER, "-m", "pytest", "-o", "addopts=-rs", "-p", "no:cacheprovider", str(Path(__file__))],
                       capture_output=True, text=True, cwd=HERE.parent, timeout=1800, env=env)
    assert p.returncode == 0 and " passed" in p.stdout, p.stdout[-3000:] + p.stderr[-2000:]


def _mixed() -> "nn.Module":
    """Every input and weight kind in one export: a signed input quantizer, per-tensor and
    per-channel weights, an unsigned ReLU input, a narrow signed input, a padded Conv."""
    from brevitas.quant import Int8WeightPerChannelFloat

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=6, return_quant_tensor=True)
            self.conv = qnn.QuantConv2d(1, 6, 3, padding=1, weight_bit_width=6, weight_quant=Int8WeightPerChannelFloat)
            self.relu = qnn.QuantReLU(bit_width=5, return_quant_tensor=True)
            self.fc1 = qnn.QuantLinear(6 * 16, 40, bias=True, weight_bit_width=7)
            self.mid = qnn.QuantIdentity(bit_width=6, narrow_range=True, return_quant_tensor=True)
            self.fc2 = qnn.QuantLinear(40, 5, bias=False, weight_bit_width=8, weight_quant=Int8WeightPerChannelFloat)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            h = self.relu(self.conv(self.inp(x.reshape(-1, 1, 4, 4))))
            return self.fc2(self.mid(self.fc1(h.reshape(h.shape[0], -1))))

    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for m in (net.conv, net.fc1, net.fc2):  # a few neurons heavy enough to overflow, others light
            m.weight.mul_(torch.rand(m.weight.shape[0], *[1] * (m.weight.dim() - 1)) ** 2)
            m.weight[:2] = torch.randn_like(m.weight[:2]).sign()
    return net


@pytest.fixture(scope="module")
def net():
    return _mixed()


def _cli_bits(model, example, n_max=13) -> list[tuple[int, ...]]:
    from fhe_lint.settings import Settings
    from fhe_lint.torch import lint_module

    report = lint_module(model, example, Settings(n_max=n_max))
    return [layer.neuron_bits for layer in report.layers if layer.weight_bits is not None]


@in_process
def test_the_guards_bound_is_the_clis_on_the_export(net):
    from fhe_lint.torch import AccumulatorGuard

    example = torch.rand(1, 16)
    guard = AccumulatorGuard(net, example, n_max=13)
    assert [g.name for g in guard.layers] == ["conv", "fc1", "fc2"]
    assert [g.x for g in guard.layers][1:] == [type(guard.layers[0].x)(0, 31), type(guard.layers[0].x)(-31, 31)]
    assert [tuple(int(b) for b in bits) for bits in guard.bits().values()] == _cli_bits(net, example)


@in_process
def test_a_step_makes_every_neuron_fit_and_leaves_fitting_ones_alone():
    from fhe_lint.torch import AccumulatorGuard
    from fhe_lint.torch.pairing import levels

    net, example = _mixed(), torch.rand(1, 16)
    guard = AccumulatorGuard(net, example, n_max=13)
    before = {g.name: (g.module.weight.detach().clone(), bits.copy()) for g, bits in zip(guard.layers, guard.bits().values())}
    assert any((bits > 13).any() for _, bits in before.values())
    changed = guard.step()
    assert changed and all(c.grown or c.projected or c.pruned for c in changed.values())
    for g, bits in zip(guard.layers, guard.bits().values()):
        assert (bits <= 13).all(), g.name
        weight, old_bits = before[g.name]
        fitting = np.flatnonzero(old_bits <= 13)
        after = (g.module.weight_orig * g.module.weight_mask) if hasattr(g.module, "weight_orig") else g.module.weight
        assert torch.equal(after.detach()[fitting], weight[fitting]), g.name  # untouched, bit for bit
        assert levels(g.module).shape[0] == len(old_bits)
    assert guard.step() == {}  # nothing left to do
    assert max(max(b) for b in _cli_bits(net, example)) <= 13


@in_process
def test_a_transposed_convolution_is_left_to_lint_module_and_the_other_layers_guarded():
    """A model with a QuantConvTranspose2d (its weight input channel first, its bound per output
    phase) is not refused as a whole: that layer is listed as unguarded, the layers before and
    after it are guarded, step() fits them, and their bits are the CLI's on the export."""
    from fhe_lint.torch import AccumulatorGuard

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=7, return_quant_tensor=True)
            self.conv = qnn.QuantConv2d(1, 8, 3, padding=1, weight_bit_width=7)
            self.relu = qnn.QuantReLU(bit_width=7, return_quant_tensor=True)
            self.up = qnn.QuantConvTranspose2d(8, 4, 2, stride=2, weight_bit_width=7)
            self.relu2 = qnn.QuantReLU(bit_width=7, return_quant_tensor=True)
            self.fc = qnn.QuantLinear(4 * 8 * 8, 10, weight_bit_width=7)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            h = self.relu2(self.up(self.relu(self.conv(self.inp(x)))))
            return self.fc(h.reshape(h.shape[0], -1))

    torch.manual_seed(0)
    net, example = Net(), torch.rand(1, 1, 4, 4)
    guard = AccumulatorGuard(net, example)
    assert [g.name for g in guard.layers] == ["conv", "fc"] and list(guard.unguarded) == ["up"]
    assert any((bits > 16).any() for bits in guard.bits().values())
    guard.step()
    cli = _cli_bits(net, example, n_max=16)
    assert len(cli) == 3 and [tuple(int(b) for b in bits) for bits in guard.bits().values()] == [cli[0], cli[2]]
    assert max(cli[0] + cli[2]) <= 16


def _holder_net(quant) -> "nn.Module":
    """One 7-bit per-tensor layer on signed 7-bit inputs: row 0 holds the scale (its 1.0) and fits,
    rows 1-5 (all 0.45, level 28) overflow 16 bits by 1.75x."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=7, return_quant_tensor=True)
            self.fc = qnn.QuantLinear(32, 6, bias=False, weight_bit_width=7, weight_quant=quant)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.fc(self.inp(x))

    net = Net()
    with torch.no_grad():
        net.fc.weight.fill_(0.45)
        net.fc.weight[0] = 0.01
        net.fc.weight[0, 0] = 1.0
    return net


def _worst_ratio(d: np.ndarray, x_lo: int, x_hi: int, n_max: int) -> float:
    """Each row's worst case over a signed n_max window, in plain Python integers."""
    ends = [(sum(min(int(v) * x_lo, int(v) * x_hi) for v in row), sum(max(int(v) * x_lo, int(v) * x_hi) for v in row))
            for row in d]
    return max(max(lo / -(2 ** (n_max - 1)), hi / (2 ** (n_max - 1) - 1)) for lo, hi in ends)


@in_process
def test_a_step_grows_the_weight_holding_the_scale_before_it_projects_and_no_level_grows():
    """The scale first: the layer's largest weight (in a row that fits) grows by the worst row's
    excess, every level shrinks or stays, and the overflowing rows fit with no projection; the
    other float weights are untouched, bit for bit, and the CLI agrees on the export. A scale
    learned as a parameter (as the scale or its log2) grows itself, every weight untouched."""
    from brevitas.quant import Int8WeightPerTensorFloat

    from fhe_lint.torch import AccumulatorGuard
    from fhe_lint.torch.pairing import levels

    net, example = _holder_net(Int8WeightPerTensorFloat), torch.rand(1, 32)
    guard = AccumulatorGuard(net, example, n_max=16)
    before, weight = levels(net.fc), net.fc.weight.detach().clone()
    assert (before[0] == [63] + [1] * 31).all() and (before[1:] == 28).all()  # the premise
    ratio = _worst_ratio(before, -64, 63, 16)
    assert 1 < ratio < 2
    change = guard.step()["fc"]
    assert (change.grown, change.projected, change.pruned) == (1, 0, 0)
    assert net.fc.weight[0, 0].item() == pytest.approx(ratio, rel=1e-6)
    untouched = torch.ones_like(weight, dtype=torch.bool)
    untouched[0, 0] = False
    assert torch.equal(net.fc.weight.detach()[untouched], weight[untouched])
    after = levels(net.fc)
    assert (np.abs(after) <= np.abs(before)).all() and (np.abs(after) < np.abs(before)).any()
    assert _worst_ratio(after, -64, 63, 16) <= 1 and max(_cli_bits(net, example, 16)[0]) <= 16
    assert (guard.layers[0].pressure == 1).all()  # fitted once the scale grew: no more pull

    class Learned(Int8WeightPerTensorFloat):
        scaling_impl_type = "parameter_from_stats"  # a parameter: growing a weight moves no scale

    class LogLearned(Learned):
        restrict_scaling_type = "log_fp"  # the parameter is the scale's log2

    for quant in (Learned, LogLearned):  # the scale's parameter grows instead, the weights stay
        net = _holder_net(quant)
        guard = AccumulatorGuard(net, example, n_max=16)
        scale, weight = net.fc.quant_weight().scale.item(), net.fc.weight.detach().clone()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            change = guard.step()["fc"]
        assert (change.grown, change.projected) == (1, 0) and torch.equal(net.fc.weight.detach(), weight)
        assert net.fc.quant_weight().scale.item() == pytest.approx(ratio * scale, rel=1e-5)
        assert max(_cli_bits(net, example, 16)[0]) <= 16


@in_process
def test_a_learned_scale_step_cannot_grow_is_projected_and_the_penalty_advised(monkeypatch):
    from brevitas.quant import Int8WeightPerTensorFloat

    from fhe_lint.torch import AccumulatorGuard

    class Learned(Int8WeightPerTensorFloat):
        scaling_impl_type = "parameter_from_stats"

    monkeypatch.setattr("fhe_lint.torch.edits._moved_scale", lambda *args: False)  # a parametrization it cannot read
    example = torch.rand(1, 32)
    net = _holder_net(Learned)
    guard = AccumulatorGuard(net, example, n_max=16)
    with pytest.warns(UserWarning, match=r"^fc: a weight scale learned as a parameter.*guard\.penalty\(\)"):
        change = guard.step()["fc"]
    assert (change.grown, change.projected) == (0, 5) and net.fc.weight[0, 0].item() == 1.0
    assert max(_cli_bits(net, example, 16)[0]) <= 16
    net = _holder_net(Learned)
    guard = AccumulatorGuard(net, example, n_max=16)
    net(example)
    guard.penalty()  # the advice is for those who do not call it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert guard.step()["fc"].projected == 5


@in_process
def test_a_neuron_that_overflowed_weighs_double_in_the_penalty_and_fades_back_while_it_fits(monkeypatch):
    from fhe_lint.torch import AccumulatorGuard
    from fhe_lint.torch.guard import _FADE

    monkeypatch.setattr("fhe_lint.torch.guard._GROWTH", 1.0)  # no scale growth: every overflowing neuron stays over
    net, example = _mixed(), torch.rand(1, 16)
    guard = AccumulatorGuard(net, example, n_max=13)
    over = {name: bits > 13 for name, bits in guard.bits().items()}
    every = np.concatenate(list(over.values()))
    assert every.any() and (~every).any()  # some neurons overflow, some fit
    guard.step()
    for g in guard.layers:
        np.testing.assert_array_equal(g.pressure, np.where(over[g.name], 2.0, 1.0))
    guard.step()  # everything fits now: 2 fades towards 1, 1 stays
    for g in guard.layers:
        np.testing.assert_array_equal(g.pressure, np.where(over[g.name], 2.0 * _FADE, 1.0))
    assert 1.0 < 2.0 * _FADE < 2.0


@pytest.mark.parametrize("x", [(0, 127), (-128, 127), (-63, 63), (-8, 0)])
def test_the_projection_threshold_is_the_smallest_that_fits(x):
    """step()'s soft threshold, solved on the sorted magnitudes, against the worst case worked
    out directly: with it every row that can fit does, with a hair less none that needed one
    does; a row that cannot fit even with all but its largest weight at 0 has them all zeroed."""
    from fhe_lint.formats.quantizer import IntRange
    from fhe_lint.torch.projection import shrinkage

    x = IntRange(*x)

    def fits(level: np.ndarray, tau: np.ndarray, low: float, high: float) -> np.ndarray:
        magnitude = np.abs(level)
        top = np.arange(level.shape[1]) == magnitude.argmax(axis=1, keepdims=True)
        kept = np.where(top, magnitude, np.maximum(magnitude - tau[:, None], 0.0))
        p, n = (kept * (level > 0)).sum(axis=1), (kept * (level <= 0)).sum(axis=1)
        return (x.lo * p - x.hi * n >= low) & (x.hi * p - x.lo * n <= high)

    rng = np.random.default_rng(x.hi)
    for trial in range(60):
        level = rng.normal(size=(rng.integers(1, 20), rng.integers(1, 40))) * rng.uniform(1, 60)
        level = np.round(level) if trial % 2 else level  # ties among the magnitudes, zeros
        low, high = -rng.uniform(100, 20000), rng.uniform(100, 20000)
        tau = shrinkage(level, x, low, high)
        largest_only = np.full(len(level), np.inf)
        feasible = fits(level, largest_only, low, high)
        slack = 1e-6 * (high - low)
        assert fits(level, tau, low - slack, high + slack)[feasible].all()
        assert not (fits(level, np.maximum(tau * (1 - 1e-6) - 1e-6, 0.0), low, high) & (tau > 0)).any()
        rest = np.abs(level).max(axis=1, keepdims=True) > np.abs(level)  # all but (one of) the largest
        np.testing.assert_array_less(np.where(rest, np.abs(level), 0).max(axis=1)[~feasible], tau[~feasible] + 1e-9)


@in_process
def test_the_penalty_is_zero_when_everything_fits_and_pulls_overflowing_neurons_in():
    from fhe_lint.torch import AccumulatorGuard

    net, example = _mixed(), torch.rand(1, 16)
    guard = AccumulatorGuard(net, example, n_max=13)
    net.train()
    net(torch.rand(8, 16))
    penalty = guard.penalty()
    assert penalty.item() > 0 and penalty.requires_grad
    penalty.backward()
    grad = net.fc1.weight.grad
    assert grad is not None and grad[:2].abs().sum() > 0  # the heavy neurons are pushed
    guard.step()
    net.zero_grad()
    net(torch.rand(8, 16))
    # a projection aims inside the window the penalty measures (a per-tensor scale moving with
    # the largest weight leaves a trace)
    assert guard.penalty().item() < 0.01 * penalty.item()


@in_process
@pytest.mark.parametrize("seed", range(6))
def test_the_penalty_term_and_its_written_out_gradient_are_autograds(seed):
    """The term's value and gradient, written out from two sums per neuron (for speed), are
    those autograd gives for the plain formula on the levels ``w / scale``, to the weights (by
    the chain rule through the sums) and to the scale (per tensor and per neuron), on random
    weights, limits and pressures."""
    from types import SimpleNamespace

    from fhe_lint.formats.quantizer import IntRange
    from fhe_lint.torch.penalty import Budget, gradients

    gen = torch.Generator().manual_seed(seed)
    w = (torch.randn(12, 30, generator=gen, dtype=torch.float64) * 0.2).requires_grad_()
    per_channel = seed % 3 == 2
    scale = (torch.rand(12 if per_channel else 1, generator=gen, dtype=torch.float64) * 0.02 + 0.01).requires_grad_()
    x = IntRange(0, 255) if seed % 2 else IntRange(-128, 127)  # unsigned or signed inputs
    c, e = x.hi - x.lo, x.hi + x.lo
    ends_t = torch.tensor([[c / 2, e / 2], [c / 2, -e / 2]], dtype=torch.float64)
    coeff = torch.rand(12, generator=gen, dtype=torch.float64) * 4 / (c * 127)
    level = w / scale[:, None]
    a_s = torch.stack((level.abs().sum(dim=1), level.sum(dim=1)))
    limits = (ends_t @ a_s).detach().median(dim=1, keepdim=True).values + 0.5  # about half past them (no ties)
    plain = (torch.relu(ends_t @ a_s - limits) * coeff).sum()
    expected_w, expected_scale = torch.autograd.grad(plain, (w, scale))

    layer = SimpleNamespace(pressure=np.ones(12), x=x, window=(-1, 1), full_scale=127,
                            module=SimpleNamespace(weight=w), channels=len(scale))
    budget = dataclasses.replace(Budget.of([layer], margin=0.0), limits=limits.numpy().repeat(12, axis=1),
                                 coeff=coeff.numpy())
    gradient = gradients(w.detach().numpy().ravel(), scale.detach().numpy(), budget, strength=1.0)
    assert gradient.shape == (w.numel() + scale.numel() + 1,)
    assert gradient[-1] == pytest.approx(plain.item(), rel=1e-9)  # the term, the coefficient of a 1
    np.testing.assert_allclose(gradient[: w.numel()].reshape(w.shape), expected_w.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gradient[w.numel():-1], expected_scale.numpy(), rtol=1e-9)
    # scale invariance: the gradient's dot product with the weights and scales is 0 (Euler), so
    # the dot product with (weights, scales, 1) is the term
    inputs = np.concatenate((w.detach().numpy().ravel(), scale.detach().numpy(), [1.0]))
    assert np.dot(inputs, gradient) == pytest.approx(plain.item(), rel=1e-9)
    assert (expected_w != 0).any() and (expected_w == 0).any()  # some neurons past their limits, some not
    assert gradients(w.detach().numpy().ravel(), scale.detach().numpy(),
                     dataclasses.replace(budget, limits=budget.limits + 1e9), 1.0) is None


@in_process
def test_the_penalty_gradient_is_autograds_on_the_plain_formula_through_brevitass_scale():
    """On a real network the penalty node gives every parameter the gradient autograd gives for
    the plain formula on the forward's integer levels (quantized weight over scale, through
    Brevitas's straight-through rounding), the scale being Brevitas's own (per tensor: it moves
    with the largest weight; per channel: with each row's)."""
    from fhe_lint.torch import AccumulatorGuard

    net, example, x = _mixed(), torch.rand(1, 16), torch.rand(8, 16)
    guard = AccumulatorGuard(net, example, n_max=13)
    net.train()

    def grads(term) -> dict[str, "torch.Tensor"]:
        net.zero_grad()
        net(x)
        term().backward()
        return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}

    def plain() -> "torch.Tensor":
        total = torch.zeros((), dtype=torch.float64)
        b, edges = guard.budget, np.cumsum([0] + [len(g.pressure) for g in guard.layers])
        for g, start, end in zip(guard.layers, edges, edges[1:]):
            level = (g.value / g.scale).reshape(g.value.shape[0], -1).double()
            torch.testing.assert_close(level, level.round(), rtol=0, atol=1e-4)  # integers, as exported
            a_s = torch.stack((level.abs().sum(dim=1), level.sum(dim=1)))
            hi_lo = (torch.from_numpy(b.ends[:, :, start:end]) * a_s).sum(dim=1)
            over = torch.relu(hi_lo - torch.from_numpy(b.limits[:, start:end]))
            total = total + (over * torch.from_numpy(b.coeff[start:end])).sum()
        return 0.5 * total

    ours, theirs = grads(lambda: guard.penalty(0.5)), grads(plain)
    assert ours.keys() == theirs.keys() and {"conv.weight", "fc1.weight", "fc2.weight"} <= ours.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-7 * theirs[name].abs().max())
    assert guard.penalty(0.5).item() == pytest.approx(plain().item(), rel=1e-5)


@in_process
def test_a_layer_no_pruning_can_fit_is_refused_before_training():
    """fc2's 8-bit weights (full scale 127) on the narrow 6-bit input ([-31, 31]): one tap alone
    spans [-3937, 3937], 13 signed bits. Pruning could fit 12 bits only by zeroing the layer
    (each row's largest weight sets its scale), which a fix must refuse (DESIGN)."""
    from fhe_lint.errors import FheLintError
    from fhe_lint.torch import AccumulatorGuard

    with pytest.raises(FheLintError, match=r"^fc2: .*needs 13 bits > n_max 12 \(FHE003\)"):
        AccumulatorGuard(_mixed(), torch.rand(1, 16), n_max=12)



def _exported_levels(model: "nn.Module", example: "torch.Tensor", path: Path) -> np.ndarray:
    """The first weight's integers as the QONNX file holds them, read here with onnx alone:
    ``rint(w / scale + zp)`` clipped to the quantizer's narrow signed grid, minus ``zp``."""
    import onnx
    from onnx import numpy_helper

    from fhe_lint.torch.export import export

    export(model, example, path)
    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t).astype(np.float64)
              for n in graph.node if n.op_type == "Constant"}
    quant = next(n for n in graph.node if n.op_type == "Quant" and n.input[0] in init)
    w, scale, zp, bits = (init.get(name, consts.get(name)) for name in quant.input)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in quant.attribute}
    assert attrs["signed"] == 1 and attrs["narrow"] == 1 and attrs["rounding_mode"] == b"ROUND"
    top = 2 ** (int(bits) - 1) - 1
    return (np.clip(np.rint(w / scale + zp), -top, top) - zp).astype(np.int64)


@in_process
def test_a_layer_brevitas_exports_other_than_it_trains_is_refused(tmp_path):
    """Brevitas's accumulator-aware (A2Q) weight quantizer normalizes each neuron's weights before
    quantizing; its QONNX export holds the raw weights with the scale alone, so the integers
    Concrete ML compiles are not the trained ones, and a bound on either says nothing of the
    other. The guard refuses the layer rather than guard a model nobody runs; lint_module reports
    on the export, as ever, and warns that it is not the trained model."""
    from brevitas.quant import Int8AccumulatorAwareWeightQuant

    from fhe_lint.errors import FheLintError
    from fhe_lint.torch import AccumulatorGuard, lint_module

    torch.manual_seed(0)
    net = nn.Sequential(qnn.QuantIdentity(bit_width=7, return_quant_tensor=True),
                        qnn.QuantLinear(64, 32, bias=True, weight_bit_width=7, weight_accumulator_bit_width=16,
                                        weight_quant=Int8AccumulatorAwareWeightQuant))
    example = torch.rand(1, 64)
    net.eval()
    exported = _exported_levels(net, example, tmp_path / "a2q.onnx")
    trained = net[1].quant_weight().int().numpy()  # for the input bit-width the export's pass cached
    if np.array_equal(exported, trained):
        pytest.skip("this Brevitas exports A2Q's weights as it trains them")
    with pytest.raises(FheLintError, match=r"^1: Brevitas exports other integer weights than it trains with"):
        AccumulatorGuard(net, example)
    with pytest.warns(UserWarning, match=r"^1: Brevitas exports other integer weights") as caught:
        report = lint_module(net, example)  # still the export's report: what Concrete ML would compile
    assert len(caught) == 1 and report.layers and report.layers[0].neuron_bits


@in_process
def test_lint_module_says_nothing_more_when_the_export_is_the_trained_model(net):
    import warnings

    from fhe_lint.torch import lint_module

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lint_module(net, torch.rand(1, 16))
    assert not [w for w in caught if "exports other integer weights" in str(w.message)]


def test_a_float32_tie_is_tolerated_a_systematic_difference_is_not():
    """Brevitas's float32 quotient and the reader's float64 one round a near-half weight apart:
    one level on about one weight in a million (measured on random layers), tolerated; more
    weights, or two levels, are another quantization."""
    from fhe_lint.errors import FheLintError
    from fhe_lint.torch.pairing import check_exported_as_trained

    trained = np.random.default_rng(0).integers(-63, 64, size=(100, 200))
    tie, shifted, many = trained.copy(), trained.copy(), trained.copy()
    tie[3, 7] += 1
    shifted[3, 7] += 2
    many[:, 0] += 1
    check_exported_as_trained("fc", trained, tie)
    for exported in (shifted, many):
        with pytest.raises(FheLintError, match="^fc: Brevitas exports other integer weights"):
            check_exported_as_trained("fc", trained, exported)

@in_process
def test_the_penalty_every_kth_call_reuses_its_gradient_between():
    """With every=3 the gradient worked out at a call serves the next two: the term is then its
    linearization there (value + gradient . change of weights and scales), not worked out anew;
    the third call after, and the first after step(), work it out again."""
    from fhe_lint.torch import AccumulatorGuard
    from fhe_lint.torch.penalty import gradients, host

    net, example = _mixed(), torch.rand(1, 16)
    each, third = (AccumulatorGuard(net, example, n_max=13, every=k) for k in (1, 3))
    net.train()
    batch = torch.rand(8, 16)
    net(batch)
    first = third.penalty()
    assert first.item() == pytest.approx(each.penalty().item(), rel=1e-6) and first.item() > 0

    def now() -> tuple[np.ndarray, np.ndarray]:  # all quantized weights and scale elements, end to end
        return (np.concatenate([host(g.value) for g in third.layers], axis=None),
                np.concatenate([host(g.scale) for g in third.layers], axis=None))

    then, slope = now(), gradients(*now(), third.budget, 0.0005)
    with torch.no_grad():
        for g in third.layers:
            g.module.weight.mul_(1.1)  # the largest weights move the per-tensor and per-channel scales
            g.module.weight[0].mul_(1.3)
    net(batch)
    change = np.concatenate([b - a for a, b in zip(then, now())] + [np.zeros(1)])
    linear, fresh = first.item() + float(np.dot(change, slope)), each.penalty().item()
    assert third.penalty().item() == pytest.approx(linear, rel=1e-5)
    assert abs(linear - fresh) > 1e-3 * fresh
    assert third.penalty().item() == pytest.approx(linear, rel=1e-5)
    assert third.penalty().item() == pytest.approx(fresh, rel=1e-6)  # the 4th call: worked out anew
    third.penalty()  # the 5th: reused
    third.step()  # projects the weights, doubles the pressure of neurons that overflowed
    with torch.no_grad():
        net.fc1.weight[2:6] = net.fc1.weight.abs().max()  # four more neurons overflow
    net(batch)
    anew = gradients(*now(), third.budget, 0.0005)[-1]
    assert third.penalty().item() == pytest.approx(anew, rel=1e-5) and anew > 0  # the first after step(): anew


@in_process
@pytest.mark.parametrize("bad", [{"n_max": 0}, {"n_max": 65}, {"n_max": 16.5}, {"n_max": True}, {"margin": 1.0},
                                 {"margin": -0.1}, {"every": 0}, {"every": 2.0}, {"strength": -1.0},
                                 {"strength": float("nan")}, {"strength": float("inf")}])
def test_arguments_outside_their_meaning_are_refused_in_one_line(bad):
    """A negative or NaN strength would push neurons out of the bound, a margin of 1 leaves no
    window, a fractional n_max no integer type: refused, naming the argument, before any work."""
    from fhe_lint.errors import FheLintError
    from fhe_lint.torch import AccumulatorGuard

    net, example = _mixed(), torch.rand(1, 16)
    (name, value), = bad.items()
    with pytest.raises(FheLintError, match=rf"^{name}=") as caught:
        if name == "strength":
            AccumulatorGuard(net, example, n_max=13).penalty(value)
        else:
            AccumulatorGuard(net, example, **{"n_max": 13, **bad})
    assert "\n" not in str(caught.value)
    AccumulatorGuard(net, example, n_max=np.int64(13), every=np.int32(2)).penalty(0.0)  # numpy integers are fine


@in_process
def test_finalize_leaves_a_plain_model_that_exports_and_lints_clean(tmp_path):
    from brevitas.export import export_qonnx

    from fhe_lint.torch import AccumulatorGuard

    net, example = _mixed(), torch.rand(1, 16)
    guard = AccumulatorGuard(net, example, n_max=13)
    guard.step()
    guard.finalize()
    assert not any(hasattr(m, "weight_orig") or m._forward_pre_hooks for m in net.modules() if hasattr(m, "weight_quant"))
    net.eval()
    export_qonnx(net, example, export_path=str(tmp_path / "m.onnx"))
    p = subprocess.run([sys.executable, "-m", "fhe_lint", str(tmp_path / "m.onnx"), "--n-max", "13", "--select",
                        "FHE001", "--format", "json"], capture_output=True, text=True)
    assert p.returncode == 0 and json.loads(p.stdout)["files"][0]["diagnostics"] == []


@in_process
def test_the_example_trains_within_the_bound():
    p = subprocess.run([sys.executable, str(HERE.parent / "examples" / "train_digits.py"), "--epochs", "4",
                        "--hidden", "64"], capture_output=True, text=True, timeout=900)
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and result["fits"] and result["max_bits"] <= 16
    assert set(result) >= {"accuracy", "fits", "pruned", "seconds"}


def _conv1d_batchnorm() -> "nn.Module":
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=7, return_quant_tensor=True)
            self.conv = qnn.QuantConv1d(1, 12, 5, weight_bit_width=7)
            self.norm = nn.BatchNorm1d(12)
            self.relu = qnn.QuantReLU(bit_width=7, return_quant_tensor=True)
            self.fc = qnn.QuantLinear(12 * 60, 10, bias=True, weight_bit_width=7)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            h = self.relu(self.norm(self.conv(self.inp(x.reshape(-1, 1, 64)))))
            return self.fc(h.reshape(h.shape[0], -1))

    return Net()


def _input_quantized_linear() -> "nn.Module":
    """Input quantizers inside the layers (no QuantIdentity), per-channel 6-bit weights."""
    from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Uint8ActPerTensorFloat

    return nn.Sequential(
        qnn.QuantLinear(64, 200, bias=True, weight_bit_width=6, weight_quant=Int8WeightPerChannelFloat,
                        input_quant=Int8ActPerTensorFloat, input_bit_width=6),
        nn.ReLU(),
        qnn.QuantLinear(200, 10, bias=True, weight_bit_width=6, input_quant=Uint8ActPerTensorFloat, input_bit_width=8))


@in_process
@pytest.mark.parametrize("make", [_conv1d_batchnorm, _input_quantized_linear], ids=["conv1d-batchnorm", "input-quant"])
def test_the_guard_trains_other_layer_kinds_within_the_bound(make):
    """Layers the mixed net lacks (Conv1d, a BatchNorm between a layer and its activation,
    input quantizers inside the layers, SGD): after each step() every neuron fits, the guard's
    bits are the CLI's on the export, and the finalized export lints clean."""
    from fhe_lint.torch import AccumulatorGuard

    digits = np.load(HERE / "fixtures" / "brevitas" / "digits.npz")
    x, y = torch.tensor(digits["x"][:512], dtype=torch.float32), torch.tensor(digits["y"][:512])
    torch.manual_seed(0)
    net = make()
    guard = AccumulatorGuard(net, x[:1], n_max=14)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    assert any((bits > 14).any() for bits in guard.bits().values())  # untrained, it overflows
    net.train()
    for _ in range(2):
        for batch in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch]) + guard.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        guard.step()
        assert all((bits <= 14).all() for bits in guard.bits().values())
    guard.finalize()
    net.eval()
    assert [tuple(int(b) for b in bits) for bits in guard.bits().values()] == _cli_bits(net, x[:1], n_max=14)
    assert max(max(b) for b in _cli_bits(net, x[:1], n_max=14)) <= 14
