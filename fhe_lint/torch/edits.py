"""What :meth:`AccumulatorGuard.step` does to a layer's parameters besides projecting: grow the
weights that hold its scale, and prune with masks that only grow."""

from __future__ import annotations

from typing import Any

import numpy as np

from fhe_lint.torch.pairing import current_weight, learned_scale, levels, stored_weight


def grow_scale(module: Any, over: np.ndarray, ratio: np.ndarray, before: np.ndarray, channels: int,
               limit: float) -> tuple[int, np.ndarray]:
    """Grow the scale of the neurons ``over`` (per tensor, the layer's; per channel, each of
    theirs) by their ``ratio`` of worst case to window, up to ``limit``. A scale computed from
    the weights (Brevitas's default statistics) grows through the weight holding it (the
    largest); a scale learned as a parameter of its own (``parameter_from_stats``) through that
    parameter, read as the scale itself or as its base-2 logarithm (Brevitas's ``fp`` and
    ``log_fp`` restrictions), whichever moves the scale by at most twice the factor. Every
    level then moves towards 0 or stays (``before``: the levels as they were), so no neuron's
    worst case grows; where that is not so (a zero-point may move some away) or nothing moved,
    all is put back. How many scales grew, and the levels now (a Brevitas quantization is most
    of a ``step()``'s time)."""
    import torch

    with torch.no_grad():
        factor = np.minimum(ratio[over], limit) if channels > 1 else np.array([min(float(ratio[over].max()), limit)])
        learned = learned_scale(module)
        if len(learned) == 1 and learned[0].numel() == channels:  # the scale's own parameter
            target, where = learned[0].view(channels), torch.as_tensor(over if channels > 1 else [0])
            held = target[where].clone()
            if not _moved_scale(module, target, where, held, torch.as_tensor(factor).to(held)):
                return 0, before
        else:  # the weight holding it: per tensor the layer's largest, per channel each row's
            magnitude = current_weight(module).detach().abs().reshape(len(ratio), -1)
            if channels > 1:
                rows, cols = torch.as_tensor(over), magnitude[torch.as_tensor(over)].argmax(dim=1)
            else:
                rows, cols = (torch.as_tensor([i]) for i in divmod(int(magnitude.argmax()), magnitude.shape[1]))
            target, where = stored_weight(module).view(len(ratio), -1), (rows, cols)
            held = target[where].clone()
            target[where] = held * torch.as_tensor(factor).to(held)
        after = levels(module)
        if not ((np.abs(after) <= np.abs(before)).all() and (after * before >= 0).all() and (after != before).any()):
            target[where] = held
            return 0, before
    return len(factor), after


def _moved_scale(module: Any, target: Any, where: Any, held: Any, gain: Any) -> bool:
    """Set a learned scale parameter so that the scale grows by about ``gain`` (more than 1,
    at most twice it), trying it as the scale and as its logarithm; put back if neither."""
    import torch

    scale = module.quant_weight().scale.detach().reshape(-1)[where]
    for moved in (held * gain, held + torch.log2(gain)):
        target[where] = moved
        grew = module.quant_weight().scale.detach().reshape(-1)[where] / scale
        if bool(((grew > 1) & (grew <= 2 * gain)).all()):
            return True
    target[where] = held
    return False


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
