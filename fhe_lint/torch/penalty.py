"""The training guard's penalty term, on two sums per neuron.

Autograd records only each neuron's L1 norm and sum of weights and its scale; the term on them
and its gradient are worked out here, for all guarded layers at once, in numpy, and join the
graph as one node (:func:`linear`). Recorded by autograd, the same two dozen ops per layer cost a
sixth of a small network's training step: each costs µs of dispatch whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fhe_lint.torch.guard import GuardedLayer


@dataclass(frozen=True)
class Budget:
    """What the penalty needs of every guarded neuron, end to end over the layers, so that it
    works them all out in one pass of a dozen vector ops."""

    ends: np.ndarray  # (2, 2, neurons): (a, s) -> (hi, -lo) of the worst case, see excess()
    limits: np.ndarray  # (2, neurons): what hi and -lo may reach, the n_max window shrunk by the margin
    coeff: np.ndarray  # what a unit of excess costs: the neuron's pressure over one full-scale tap
    edges: np.ndarray  # where each layer's neurons start, and where the last one's end

    @classmethod
    def of(cls, layers: list[GuardedLayer], margin: float) -> Budget:
        ends, limits, coeff = [np.zeros((2, 2, 0))], [np.zeros((2, 0))], [np.zeros(0)]
        for g in layers:
            n, c, e, (low, high) = len(g.pressure), g.x.hi - g.x.lo, g.x.hi + g.x.lo, g.window
            ends.append(np.repeat([[[c / 2], [e / 2]], [[c / 2], [-e / 2]]], n, axis=2))
            limits.append(np.repeat([[(1 - margin) * high], [-(1 - margin) * low]], n, axis=1))
            coeff.append(g.pressure / (c * g.full_scale))
        edges = np.cumsum([0] + [len(g.pressure) for g in layers])
        return cls(np.concatenate(ends, axis=2), np.concatenate(limits, axis=1), np.concatenate(coeff), edges)


def excess(per_neuron: np.ndarray, budget: Budget) -> tuple[float, np.ndarray] | None:
    """The term of :meth:`AccumulatorGuard.penalty` from each neuron's weights' L1 norm, sum and
    scale (``per_neuron``, ``(3, neurons)``), and its gradient with respect to them (None: 0,
    with a 0 gradient).

    With ``P``/``N`` the sums of a neuron's positive/negative |levels|, ``a = P + N`` and
    ``s = P - N``, the worst case is ``hi = x_hi P - x_lo N = (c a + e s) / 2`` and
    ``-lo = (c a - e s) / 2`` with ``c = x_hi - x_lo``, ``e = x_hi + x_lo``; each past its
    limit adds its excess times the neuron's ``coeff``. Levels are ``w / scale``, so
    ``(a, s) = sums / scale`` and the scale's gradient is ``-(d_a a + d_s s) / scale``."""
    add, scale = np.add.reduce, per_neuron[2]  # ufunc reductions: ndarray.sum's Python wrapper costs as much
    a_s = per_neuron[:2] / scale
    over = np.maximum(add(budget.ends * a_s, axis=1) - budget.limits, 0.0)  # hi, -lo past their limits
    if not np.maximum.reduce(over, axis=None) > 0:
        return None
    weight = (over > 0) * budget.coeff
    d_as = add(budget.ends * weight[:, None], axis=0)  # d value / d(a, s)
    d_scale = -add(d_as * a_s, axis=0, keepdims=True)
    return float(add(over * weight, axis=None)), np.concatenate((d_as, d_scale)) / scale


@cache
def linear() -> Any:
    """A term of known value and gradient (with respect to ``x``) as one autograd node."""
    import torch

    class Linear(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, value: Any, gradient: Any) -> Any:
            ctx.save_for_backward(gradient)
            return value

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, None, None]:
            (gradient,) = ctx.saved_tensors
            return grad * gradient, None, None

    return Linear
