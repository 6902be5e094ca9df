"""The training guard's penalty term, on two sums per neuron.

The term needs only each neuron's L1 norm and sum of weights and its scale (the weights are the
quantized ones of the step's forward, so ``w / scale`` are the integer levels). All guarded
weights are read as one flat array, whose neurons are contiguous runs, so that one reduction
gives every neuron's sums (``np.add.reduceat``); the term's gradient to every weight and scale
is worked out here in numpy and joins the graph as its dot product with all weights and scales
(and a 1, whose coefficient is the term). Its cost is a count of calls, not of weights: right
after a training step of the digits networks (3-6 ms, mostly Brevitas's Python) a numpy call
costs about 6 µs and a torch call 10-15 µs whatever their size, their code evicted from the
caches by the step. This way the gradient is some 25 numpy calls, 0.25-0.3 ms, and the dot
product 0.05 ms and as much in the backward; recording the sums with autograd instead (a dozen
torch calls per layer, each with a backward) cost as much in the forward and twice that in the
backward, and a custom autograd function with the gradient saved, 0.03 ms more in the backward
(its Python). Other spellings (two reductions instead of one stacked, ``np.where`` for the signs)
were no faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fhe_lint.torch.guard import GuardedLayer


@dataclass(frozen=True)
class Budget:
    """What the penalty needs of every guarded neuron, end to end over the layers, so that it
    works them all out in one pass of a few dozen vector ops."""

    ends: np.ndarray  # (2, 2, neurons): (a, s) -> (hi, -lo) of the worst case, see excess()
    limits: np.ndarray  # (2, neurons): what hi and -lo may reach, the n_max window shrunk by the margin
    coeff: np.ndarray  # what a unit of excess costs: the neuron's pressure over one full-scale tap
    starts: np.ndarray  # where each neuron's weights start in all guarded weights read end to end
    fan_in: np.ndarray  # how many weights each neuron has
    scale_of: np.ndarray  # each neuron's scale element, in all layers' scales end to end
    groups: np.ndarray  # the first neuron of each scale element (all of a layer's, per tensor)

    @classmethod
    def of(cls, layers: list[GuardedLayer], margin: float) -> Budget:
        ends, limits, coeff = [np.zeros((2, 2, 0))], [np.zeros((2, 0))], [np.zeros(0)]
        fan_in, scale_of, first = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)], 0
        for g in layers:
            n, c, e, (low, high) = len(g.pressure), g.x.hi - g.x.lo, g.x.hi + g.x.lo, g.window
            ends.append(np.repeat([[[c / 2], [e / 2]], [[c / 2], [-e / 2]]], n, axis=2))
            limits.append(np.repeat([[(1 - margin) * high], [-(1 - margin) * low]], n, axis=1))
            coeff.append(g.pressure / (c * g.full_scale))
            fan_in.append(np.full(n, g.module.weight[0].numel()))
            scale_of.append(first + np.arange(n) * g.channels // n)
            first += g.channels
        fan, owner = np.concatenate(fan_in), np.concatenate(scale_of)
        return cls(np.concatenate(ends, axis=2), np.concatenate(limits, axis=1), np.concatenate(coeff),
                   np.cumsum(fan) - fan, fan, owner, np.flatnonzero(np.diff(owner, prepend=-1)))


def excess(sums: np.ndarray, scale: np.ndarray, budget: Budget, strength: float = 1.0
           ) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The term of :meth:`AccumulatorGuard.penalty` from each neuron's weights' L1 norm and sum
    (``sums``, ``(2, neurons)``) and its scale, and its gradient with respect to the sums and to
    the scale (None: 0, with a 0 gradient).

    With ``P``/``N`` the sums of a neuron's positive/negative |levels|, ``a = P + N`` and
    ``s = P - N``, the worst case is ``hi = x_hi P - x_lo N = (c a + e s) / 2`` and
    ``-lo = (c a - e s) / 2`` with ``c = x_hi - x_lo``, ``e = x_hi + x_lo``; each past its
    limit adds its excess times the neuron's ``coeff`` and ``strength``. Levels are ``w / scale``,
    so ``(a, s) = sums / scale``, the sums' gradient is ``d(a, s) / scale`` and the scale's
    ``-(d_a a + d_s s) / scale``."""
    a_s = sums / scale
    over = (budget.ends * a_s).sum(axis=1) - budget.limits  # hi, -lo past their limits
    if not over.max() > 0:
        return None
    weight = (over > 0) * (strength * budget.coeff)
    d_sums = (budget.ends * weight[:, None]).sum(axis=0) / scale
    return float(np.vdot(over, weight)), d_sums, -(d_sums * a_s).sum(axis=0)


def gradients(weights: np.ndarray, elements: np.ndarray, budget: Budget, strength: float
              ) -> np.ndarray | None:
    """The gradient of the term, ``strength`` times :func:`excess`, to each of all guarded
    weights (``weights``, end to end) and scale elements (``elements``, likewise), then the term
    itself (None: the term is 0, and so is its gradient).

    The term depends on the weights only through the levels ``w / scale``, so scaling weights
    and scales alike leaves it unchanged and (Euler) its gradient's dot product with them is 0:
    the dot product of this vector with the weights, the scales and a 1 is the term, with this
    gradient, which is how it joins the graph."""
    scale = elements.astype(np.float64)[budget.scale_of]
    sums = np.add.reduceat(np.stack((np.abs(weights), weights)), budget.starts, axis=1)
    found = excess(sums, scale, budget, strength)
    if found is None:
        return None
    value, d_sums, d_scale = found
    d_w = np.repeat(d_sums.astype(weights.dtype), budget.fan_in, axis=1)
    d_w[0] *= np.sign(weights)
    d_w[0] += d_w[1]
    return np.concatenate((d_w[0], np.add.reduceat(d_scale, budget.groups), [value]), dtype=weights.dtype)


def host(tensor: Any) -> np.ndarray:
    """The tensor's values in numpy, at least in single precision (numpy has no bfloat16, and
    half-precision sums of hundreds of weights would lose the bound's last bits)."""
    if tensor.element_size() < 4:
        tensor = tensor.detach().float()
    return tensor.numpy(force=True)
