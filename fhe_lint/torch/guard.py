"""The accumulator guard: the exact per-neuron bound of ``fhe-lint``, kept during training.

Two tools, one bound. ``step()``, once an epoch, is enough on the digits networks (it grows the
scale where neurons overflow, which the network cannot do fast itself); ``penalty()``, optional,
is a differentiable term for the loss: how far each neuron's
worst case, on the integer levels of the step's own forward (Brevitas's quantized weight over its
scale; gradients reach the float weights through Brevitas's straight-through rounding), lies past
the ``n_max`` window; with it the network learns to spend its accumulator budget where it helps.
``step()`` is the hard guarantee: on the integer weights Brevitas will export it computes the
exact bound with ``fhe_lint.bounds``; where neurons overflow it first grows the weight that holds
their scale (what the penalty's gradient on the scale asks for, without the optimizer's pace),
which shrinks every level of that scale and grows none, then, in each neuron that still
overflows (only those), projects the weights onto the bound and prunes whatever rounding leaves
over, the smallest-|w| weights ``--fix`` would prune, with masks that only grow
(``torch.nn.utils.prune``).
``finalize()`` makes the masks permanent.

The input range of each layer is the one fhe-lint reads from the model's QONNX export (so
narrow ranges, unsigned ReLU outputs and zero padding are exactly the CLI's), taken once, after
checking that the export holds the integer weights Brevitas trains with.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fhe_lint import bounds
from fhe_lint.analysis.accumulators import tap_range
from fhe_lint.errors import FheLintError
from fhe_lint.fix.plan import prune_to_fit
from fhe_lint.formats.quantizer import IntRange
from fhe_lint.settings import Settings
from fhe_lint.torch.export import analysed_export
from fhe_lint.torch.edits import grow_scale, mask_out
from fhe_lint.torch.pairing import (TRANSPOSED, check_exported_as_trained, current_weight, learned_scale, levels,
                                    paired, stored_weight)
from fhe_lint.torch.penalty import Budget, gradients, host
from fhe_lint.torch.projection import shrinkage

# a neuron's penalty weight, doubled at each step() it overflowed, fades back this much at each it
# fits: halving it back (0.5) let the digits MLPs' neurons cross the bound again twice as often,
# each crossing a projection and a quantization more in step(), for the same accuracy
_FADE = 0.95
_ROUNDS = 8  # projections first, then pruning: a per-tensor scale can move when a neuron's largest weight does
# how much step() may grow a scale at once: a network inside the bound wants its scale several
# times larger than without it, and Adam moves the weight holding it by about the learning rate a
# step (at 1e-3 the 7/7 digits MLP-192 ended at 95.55 % for it, 98.39 % with this); at once
# without a limit, the results were the same within noise, this leaves the rest to the projection
_GROWTH = 2.0


@dataclass
class Change:
    """What one :meth:`AccumulatorGuard.step` did to a layer."""

    grown: int = 0  # scales grown (a layer's one per tensor, or one per neuron per channel)
    projected: int = 0  # neurons whose weights were shrunk onto the bound (counted per round)
    pruned: int = 0  # weights masked to zero


@dataclass
class GuardedLayer:
    name: str  # the module's path in the model
    module: Any
    x: IntRange  # what one tap reads: the input quantizer's integers (and padding's zeros)
    scale: Any = None  # the weight scale of the latest training forward, with its autograd graph
    value: Any = None  # the quantized weight of that forward (its levels times the scale), likewise
    window: tuple[int, int] = (0, 0)  # the n_max window of the layer's integer type (set by the guard)
    ratio: np.ndarray = field(default_factory=lambda: np.ones(0))  # per neuron, worst case over the window's end
    levels: np.ndarray = field(default_factory=lambda: np.ones((0, 0)))  # the integer weights last checked
    full_scale: int = 1  # the largest weight level, 2^(bits-1) - 1
    channels: int = 1  # the weight scale's elements: 1 per tensor, one per neuron per channel
    learned: bool = False  # its scale is a parameter of its own, grown as such
    pressure: np.ndarray = field(default_factory=lambda: np.ones(0))  # per neuron, the penalty's
    # weight: doubled each step it overflowed, fading back to 1 while it fits

    def __post_init__(self) -> None:
        def keep(_: Any, __: Any, out: Any) -> None:
            kept = self.module.training and hasattr(out, "scale")
            self.scale, self.value = (out.scale, out.value) if kept else (None, None)

        self.module.weight_quant.register_forward_hook(keep)

    def quantized(self) -> tuple[Any, Any]:
        """The quantized weight and its scale: the latest training forward's (no second
        quantization), or, before any, quantized now."""
        if self.scale is not None:
            return self.value, self.scale
        q = self.module.quant_weight()
        return q.value, q.scale


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _torch() -> Any:
    import torch

    return torch


class AccumulatorGuard:
    """Keeps every Brevitas linear layer's exact worst-case accumulator within ``n_max`` bits."""

    def __init__(self, model: Any, example_input: Any, n_max: int = 16, margin: float = 0.02, every: int = 2) -> None:
        if not (_integer(n_max) and 1 <= n_max <= 64):
            raise FheLintError(f"n_max={n_max!r}: an integer bit-width from 1 to 64 (the CLI's --n-max)")
        if not 0 <= margin < 1:
            raise FheLintError(f"margin={margin!r}: the fraction of the window kept free, in [0, 1)")
        if not (_integer(every) and every >= 1):
            raise FheLintError(f"every={every!r}: the penalty is worked out on every k-th call, k >= 1")
        self.n_max, self.margin, self.every, self._calls = n_max, margin, every, 0
        self._penalized = self._told = False  # penalty() ever called; the advice to call it given
        self._one: Any = None  # the constant the penalty's value multiplies in its dot product
        self._gradient: Any = None  # the term's gradient, then the term, at the latest k-th call
        analysis = analysed_export(model, example_input, Settings(n_max=n_max)).analysis
        self.layers: list[GuardedLayer] = []
        self.unguarded: dict[str, str] = {}  # module path -> why it is not guarded (e.g. FHE005's unknown range)
        for name, module, la in paired(model, example_input, analysis):
            if type(module).__name__ in TRANSPOSED:  # its bound is per (neuron, phase): not modelled here
                self.unguarded[name] = "a transposed convolution, not guarded (lint_module checks it)"
                continue
            trained = levels(module)
            check_exported_as_trained(name, trained, la.layer.weight.d)
            neurons = la.layer.weight.d.shape[0]
            channels = module.quant_weight().scale.numel()
            if channels not in (1, neurons):
                raise FheLintError(f"{name}: its weight scale is neither per tensor nor per output channel")
            if la.bounds is None:
                self.unguarded[name] = la.layer.unknown or "range unknown"
            else:
                full_scale, x = 2 ** (la.layer.weight.bits - 1) - 1, tap_range(la.layer)
                lone = bounds.accumulator_interval(np.array([[full_scale], [-full_scale]]), x.lo, x.hi)
                lone_bits = int(bounds.layer_bits(*lone)[0].max())
                if lone_bits > n_max:  # its largest weight sits at full scale (the quantizer's scale is set by it)
                    raise FheLintError(f"{name}: one full-scale weight ({full_scale}) on inputs in [{x.lo}, {x.hi}] "
                                       f"alone needs {lone_bits} bits > n_max {n_max} (FHE003): no pruning keeps "
                                       "it within the bound; lower its weight or input bit-width, or raise n_max")
                self.layers.append(GuardedLayer(name, module, x, full_scale=full_scale,
                                                learned=bool(learned_scale(module)),
                                                channels=channels, pressure=np.ones(neurons)))
                self._overflowing(self.layers[-1], trained)
        self.budget = Budget.of(self.layers, margin)

    def bits(self) -> dict[str, np.ndarray]:
        """Each guarded layer's per-neuron worst-case bits, as ``fhe-lint`` computes them."""
        out = {}
        for g in self.layers:
            lo, hi = bounds.accumulator_interval(levels(g.module), g.x.lo, g.x.hi)
            out[g.name] = bounds.layer_bits(lo, hi)[0]
        return out

    def step(self) -> dict[str, Change]:
        """Bring every overflowing neuron back within the exact bound. First the scale: the
        weight holding it (per tensor, the layer's largest; per channel, each overflowing
        neuron's) grows, up to twice, towards the size at which the worst neuron fits, so that
        the scale grows and every level it scales shrinks (none grows: a fitting neuron keeps
        fitting, and its float weights are untouched unless it holds the per-tensor scale).
        Then, in the neurons still overflowing (only those), the weights are projected onto the
        bound (soft-thresholding, which keeps the large weights and zeroes the smallest, as the
        bound is an L1 budget per sign) and, for what rounding still leaves over, the
        smallest-|w| are pruned with masks that only grow. Each neuron still overflowing once the
        scale grew also doubles its weight in :meth:`penalty` (fading back to 1 while it fits:
        doubling every neuron that overflowed before, the 7/7 MLP-192 at 1e-3 lost 1.4 pt). Returns what
        changed, per layer (empty: nothing did)."""
        changed: dict[str, Change] = {}
        for g in self.layers:
            over, change = self._overflowing(g), Change()
            if over.size:
                change.grown, now = grow_scale(g.module, over, g.ratio, g.levels, g.channels, _GROWTH)
                over = self._overflowing(g, now) if change.grown else over
            grew = np.zeros(len(g.pressure), dtype=bool)  # still over once the scale grew
            grew[over] = True
            g.pressure = np.where(grew, g.pressure * 2, np.maximum(g.pressure * _FADE, 1.0))
            for round_ in range(_ROUNDS):
                if over.size == 0:
                    break
                if round_ < _ROUNDS // 2:
                    self._project(g, over, margin=self.margin * 2**round_)
                    change.projected += int(over.size)
                else:
                    magnitude = current_weight(g.module).detach().abs().reshape(len(g.pressure), -1).cpu().numpy()
                    taps = prune_to_fit(levels(g.module), magnitude, g.x, self.n_max)
                    mask_out(g.module, taps)
                    change.pruned += int(taps.size)
                over = self._overflowing(g)
            if over.size:
                raise FheLintError(f"{g.name}: still overflows after {_ROUNDS} rounds")
            if change.grown or change.projected or change.pruned:
                changed[g.name] = change
        self.budget, self._calls = Budget.of(self.layers, self.margin), 0  # weights and limits moved
        stuck = [g.name for g in self.layers if g.learned and g.name in changed and not changed[g.name].grown]
        if stuck and not (self._penalized or self._told):
            self._told = True
            warnings.warn(f"{', '.join(stuck)}: a weight scale learned as a parameter that step() could not "
                          "grow (read neither as the scale nor as its log2), so it projected instead; add "
                          "guard.penalty() to the loss, whose gradient grows it (digits MLP, 8 epochs, such scales "
                          "not grown, per tensor and per channel: 92.8 and 71.6 % without the penalty, 95.4 and "
                          "96.7 % with)", stacklevel=2)
        return changed

    def _overflowing(self, g: GuardedLayer, d: np.ndarray | None = None) -> np.ndarray:
        """The neurons past ``n_max`` (on the levels ``d`` when just read); also renews the
        layer's window (its type may turn signed), levels and each neuron's worst case over the
        window's end it faces."""
        g.levels = levels(g.module) if d is None else d
        lo, hi = bounds.accumulator_interval(g.levels, g.x.lo, g.x.hi)
        bits, signed = bounds.layer_bits(lo, hi)
        g.window = low, high = bounds.window(self.n_max, signed)
        # (a window end of 0, as n_max=1 gives, counts as 1: no division by 0 into the growth)
        g.ratio = np.maximum(np.asarray(hi, dtype=np.float64) / max(high, 1),
                             np.asarray(lo, dtype=np.float64) / min(low, -1))
        return np.flatnonzero(bits > self.n_max)

    def _project(self, g: GuardedLayer, rows: np.ndarray, margin: float) -> None:
        """Soft-threshold the weights of neurons ``rows`` just enough for their worst case on the
        real-valued levels to fit the window shrunk by ``margin`` (in numpy: a dozen torch calls
        fewer, a third of the time)."""
        torch = _torch()
        with torch.no_grad():
            target = stored_weight(g.module)
            index, flat = torch.as_tensor(rows), (len(rows), -1)
            stored = host(target[index]).reshape(flat).astype(np.float64)
            seen = host(current_weight(g.module)[index]).reshape(flat).astype(np.float64)  # as the quantizer sees them
            # the last training forward's scale: one optimizer step old at most, and the rounds
            # check the exact levels after each projection (a quantization is a good part of a step)
            scale = host(g.quantized()[1]).astype(np.float64)
            scale = scale.reshape(-1)[rows, None] if scale.size > 1 else scale.reshape(1, 1)
            low, high = g.window
            tau = shrinkage(seen / scale, g.x, (1 - margin) * low, (1 - margin) * high)
            shrunk = np.sign(stored) * np.maximum(np.abs(stored) - tau[:, None] * scale, 0.0)
            top = (np.arange(len(rows)), np.abs(seen).argmax(axis=1))  # each row's largest: kept
            shrunk[top] = stored[top]
            target[index] = torch.from_numpy(shrunk.reshape(len(rows), *target.shape[1:])).to(target)

    def penalty(self, strength: float = 0.0005) -> Any:
        """A differentiable loss term: per neuron, how far its worst case lies past the window
        of ``n_max`` bits shrunk by ``margin`` (room for the optimizer's steps until the next
        :meth:`step`), counted in full-scale taps (input range x largest level), so that one
        strength suits every bit-width; zero when everything fits. The worst case is the exact
        one, on the integer levels of this step's forward: Brevitas's quantized weight over its
        scale, whose gradient reaches the float weights through Brevitas's straight-through
        rounding and the scale through its own graph. (On levels ``w / scale`` before rounding,
        as it once was, the term measured a bound that rounding then moved: the 8-bit digits
        MLPs came out 0.14 and 0.24 pt less accurate on average over three seeds.)

        The term's gradient is worked out in numpy on two sums per neuron and the scale, for all
        layers at once (:mod:`fhe_lint.torch.penalty`), and joins the graph as one dot product
        with the weights and scales. With ``every=k`` that gradient is worked out on every k-th
        call (and on the first after :meth:`step`) and reused, with its strength, in between:
        the term is then its linearization at that call, a step old. On the digits networks
        ``every=2`` keeps every call's accuracy over three seeds and cuts the term's cost by
        two-fifths; ``every=3`` cost the 8-bit MLP-256 1.2 pt, ``every=4`` 3.5 (README, "During
        training")."""
        if not 0 <= strength < float("inf"):
            raise FheLintError(f"strength={strength!r}: the penalty's weight in the loss, finite and >= 0")
        torch = _torch()
        full = self._calls % self.every == 0
        self._calls += 1
        self._penalized = True
        if not full and self._gradient is None:  # everything fits: the term and its gradient are exactly 0
            return torch.zeros(())
        quantized = [g.quantized() for g in self.layers]
        like = quantized[0][0]
        if self._one is None or self._one.dtype != like.dtype or self._one.device != like.device:
            self._one = torch.ones(1, dtype=like.dtype, device=like.device)
        # all weights, then all scale elements, then a 1: what the gradient is dotted with
        inputs = torch.cat([*(t.reshape(-1) for part in zip(*quantized) for t in part), self._one])
        if full:
            flat, elements = host(inputs), len(self.budget.groups)
            gradient = gradients(flat[:-1 - elements], flat[-1 - elements:-1], self.budget, strength)
            if gradient is None:
                self._gradient = None
                return torch.zeros(())
            self._gradient = torch.from_numpy(gradient).to(self._one)
        return torch.dot(inputs, self._gradient)

    def finalize(self) -> None:
        """Make the pruning permanent (``prune.remove``): plain weights with zeros, no hooks."""
        from torch.nn.utils import prune

        for g in self.layers:
            if hasattr(g.module, "weight_orig"):
                prune.remove(g.module, "weight")
