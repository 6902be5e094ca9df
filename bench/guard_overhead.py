"""The training guard's cost per training step, measured in one process.

    python bench/guard_overhead.py [--rounds 40]

Whole trainings vary by +-15 % from run to run on a shared machine, more than the guard costs.
Here the same network is trained twice side by side, with and without the guard (the same
batches, examples/train_digits.py's models and optimizer), in alternating blocks of 20 steps,
so that the machine's drift moves both alike; the figure is the median block. ``step()`` runs
once per epoch in the example (23 batches of 64 digits): its time is spread over those steps.
Needs the torch extra.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"
CONFIGS = [("MLP 64-192-10, 7/7", "mlp", 192, 7), ("MLP 64-128-10, 7/7", "mlp", 128, 7),
           ("MLP 64-256-10, 8/8", "mlp", 256, 8), ("CNN 8-16, 7/7", "cnn", (8, 16), 7)]
BATCHES_PER_EPOCH = 23  # 1,437 training digits in batches of 64


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trainer(td: Any, arch: str, size: Any, bits: int, guarded: bool, x: Any, y: Any):
    import torch

    from fhe_lint.torch import AccumulatorGuard

    torch.manual_seed(0)
    model = td.mlp(size, bits, bits) if arch == "mlp" else td.cnn(size, bits, bits)
    guard = AccumulatorGuard(model, x[:1]) if guarded else None
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()

    def steps(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if guard is not None:
                loss = loss + guard.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / n

    return steps, guard


def main() -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    a = parser.parse_args()
    td = _example()
    digits = np.load(td.DIGITS)
    rows = []
    for name, arch, size, bits in CONFIGS:
        x = torch.tensor(digits["x"][:64], dtype=torch.float32)
        x = x.reshape(-1, 1, 8, 8) if arch == "cnn" else x
        y = torch.tensor(digits["y"][:64], dtype=torch.long)
        (plain, _), (guarded, guard) = (_trainer(td, arch, size, bits, g, x, y) for g in (False, True))
        plain(30), guarded(30)
        blocks = {False: [], True: []}
        for _ in range(a.rounds):
            blocks[False].append(plain(20))
            blocks[True].append(guarded(20))
        start = time.perf_counter()
        for _ in range(5):
            guard.step()
        step = (time.perf_counter() - start) / 5 / BATCHES_PER_EPOCH
        without, with_penalty = (statistics.median(blocks[g]) for g in (False, True))
        rows.append([name, f"{1e3 * without:.2f}", f"{1e3 * (with_penalty - without):.2f}", f"{1e3 * step:.2f}",
                     f"{100 * (with_penalty - without + step) / without:.0f} %"])
    print(tabulate(rows, headers=["model", "step ms", "+ penalty ms", "+ step() ms per batch", "overhead"]))


if __name__ == "__main__":
    main()
