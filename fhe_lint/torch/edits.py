"""What :meth:`AccumulatorGuard.step` does to a layer's parameters besides projecting: grow the
weights that hold its scale, and prune with masks that only grow."""

from __future__ import annotations

from typing import Any

import numpy as np

from fhe_lint.torch.pairing import current_weight, levels, stored_weight


def grow_scale(module: Any, over: np.ndarray, ratio: np.ndarray, before: np.ndarray, channels: int,
               limit: float) -> tuple[int, np.ndarray]:
    """Grow the weights holding the scale of the neurons ``over`` (per tensor, the layer's
    largest; per channel, each of theirs) by their ``ratio`` of worst case to window, up to
    ``limit``. A scale computed from the weights (Brevitas's default statistics) grows with them
    and every level it scales moves towards 0 or stays (``before``: the levels as they were), so
    no neuron's worst case grows; where that is not so (a scale learned as a parameter of its own
    leaves every level as it was; a zero-point may move some away), the weights are put back.
    How many grew, and the levels now (a Brevitas quantization is most of a ``step()``'s time)."""
    import torch

    with torch.no_grad():
        magnitude = current_weight(module).detach().abs().reshape(len(ratio), -1)
        if channels == 1:
            at = int(magnitude.argmax())
            rows, cols = np.array([at // magnitude.shape[1]]), np.array([at % magnitude.shape[1]])
            factor = np.array([min(float(ratio[over].max()), limit)])
        else:
            rows, cols = over, magnitude[torch.as_tensor(over)].argmax(dim=1).numpy()
            factor = np.minimum(ratio[over], limit)
        flat = stored_weight(module).view(len(ratio), -1)
        where = (torch.as_tensor(rows), torch.as_tensor(cols))
        held = flat[where].clone()
        flat[where] = held * torch.as_tensor(factor).to(held)
        after = levels(module)
        if not ((np.abs(after) <= np.abs(before)).all() and (after * before >= 0).all() and (after != before).any()):
            flat[where] = held
            return 0, before
    return len(rows), after


def mask_out(module: Any, taps: np.ndarray) -> None:
    """Zero the flat ``(neurons, fan_in)`` positions ``taps`` with a mask that only grows."""
    import torch
    from torch.nn.utils import prune

    with torch.no_grad():
        if hasattr(module, "weight_mask"):
            module.weight_mask.view(-1)[torch.as_tensor(taps)] = 0
            module.weight = current_weight(module)
        else:
            mask = torch.ones_like(module.weight)
            mask.view(-1)[torch.as_tensor(taps)] = 0
            prune.custom_from_mask(module, "weight", mask)
