"""The training guard's cost in training time, measured in one process.

    python bench/guard_overhead.py [--epochs 100] [--batch 64]

Whole trainings vary by +-15 % from run to run on a shared machine, more than the guard costs.
Here the same network is trained four times side by side (examples/train_digits.py's models,
optimizer and batches of 64, or ``--batch``, of the 1,437 training digits), one epoch of each in
turn: twice without the guard, with it (``step()`` at the end of each epoch, as the example
does) and with it and its ``penalty()`` term in the loss at every step (``every=2``). The figure is the
median over the rounds of a guarded epoch's time over the unguarded ones' mean in the same round,
which the machine's drift moves alike. The two unguarded trainings do the same arithmetic, yet one
model's memory can sit better than the other's for a whole run: their ratio, the "control"
column, is how far apart two identical trainings come out, the resolution of the figures beside
it. The order within a round is shuffled (seeded): in a fixed order
the one run second was 1.8 % slower than the same training run first. Whole epochs, not single
steps: pairing single steps of the networks evicts each one's code and data from the caches
between steps, which inflates small per-step costs.
Needs the torch extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"
CONFIGS = [("MLP 64-192-10, 7/7", "mlp", 192, 7), ("MLP 64-128-10, 7/7", "mlp", 128, 7),
           ("MLP 64-256-10, 8/8", "mlp", 256, 8), ("CNN 8-16, 7/7", "cnn", (8, 16), 7),
           ("MLP 64-512-512-10, 7/7", "deep", 512, 7)]


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trainer(td: Any, arch: str, size: Any, bits: int, guarded: bool, penalty: bool, x: Any, y: Any, batches: list):
    import torch

    from fhe_lint.torch import AccumulatorGuard

    torch.manual_seed(0)
    model = {"mlp": td.mlp, "cnn": td.cnn, "deep": _deep_mlp}[arch](size, bits, bits)
    guard = AccumulatorGuard(model, x[:1]) if guarded else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()

    def epoch() -> float:
        start = time.perf_counter()
        for b in batches:
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            if penalty:
                loss = loss + guard.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        if guard is not None:
            guard.step()
        return time.perf_counter() - start

    return epoch


def _deep_mlp(width: int, w_bits: int, a_bits: int) -> Any:
    """Two hidden layers: the middle one sums ``width`` unsigned inputs per neuron, a tight budget
    on many weights (the guard's projections and its numpy work grow with them)."""
    from brevitas import nn as qnn
    from torch import nn

    return nn.Sequential(
        qnn.QuantIdentity(bit_width=a_bits, return_quant_tensor=True),
        qnn.QuantLinear(64, width, bias=True, weight_bit_width=w_bits),
        qnn.QuantReLU(bit_width=a_bits, return_quant_tensor=True),
        qnn.QuantLinear(width, width, bias=True, weight_bit_width=w_bits),
        qnn.QuantReLU(bit_width=a_bits, return_quant_tensor=True),
        qnn.QuantLinear(width, 10, bias=True, weight_bit_width=w_bits),
    )


def _orders(rounds: int, n: int) -> list[list[int]]:
    rng = random.Random(0)
    return [rng.sample(range(n), n) for _ in range(rounds)]


def _round(trainers: tuple, order: list[int]) -> list[float]:
    """One epoch of each trainer, in the given order; their times in the trainers' order."""
    times = [0.0] * len(trainers)
    for k in order:
        times[k] = trainers[k]()
    return times


def main() -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="measured epochs per model")
    parser.add_argument("--batch", type=int, default=64, help="batch size (the guard's cost is per step)")
    a = parser.parse_args()
    td = _example()
    digits = np.load(td.DIGITS)
    rows = []
    for name, arch, size, bits in CONFIGS:
        x = torch.tensor(digits["x"], dtype=torch.float32)
        x = x.reshape(-1, 1, 8, 8) if arch == "cnn" else x
        y = torch.tensor(digits["y"], dtype=torch.long)
        batches = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[360:].split(a.batch)
        trainers = tuple(_trainer(td, arch, size, bits, guarded, penalty, x, y, batches)
                         for guarded, penalty in ((False, False), (False, False), (True, False), (True, True)))
        for train in trainers:
            train()
        runs = [_round(trainers, order) for order in _orders(a.epochs, len(trainers))]
        without = statistics.median((run[0] + run[1]) / 2 for run in runs) / len(batches)
        control = statistics.median(run[1] / run[0] for run in runs)
        ratio = [statistics.median(2 * run[k] / (run[0] + run[1]) for run in runs) for k in (2, 3)]
        shares = (f"{1e3 * without * (r - 1):.2f} ({100 * (r - 1):.0f} %)" for r in ratio)
        rows.append([name, f"{1e3 * without:.2f}", f"{100 * (control - 1):+.1f} %", *shares])
    print(tabulate(rows, headers=["model", "ms per batch", "control", "+ guard", "+ guard and penalty()"]))


if __name__ == "__main__":
    main()
