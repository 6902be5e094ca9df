"""Train a Brevitas network on the 1,797 sklearn digits, with or without fhe-lint's accumulator
guard, export it to QONNX as Concrete ML does, and lint the export.

    python examples/train_digits.py --arch mlp --hidden 192 --weight-bits 7 --act-bits 7 --guard --out mlp.onnx

The last line printed is one JSON object: accuracy on all 1,797 digits (and on the 360 held out
from training), whether the export fits n_max (fhe-lint, FHE001), the scales the guard grew, the
neurons it projected and the weights it pruned, and the seconds spent training, of which
``guard_seconds`` inside the guard's own calls (``penalty()``, ``step()``): about half of what
the guard costs, the rest (the term's backward, the caches its numpy work clears) shows in
``seconds`` only; ``bench/guard_overhead.py`` measures the whole. Needs the ``torch`` extra.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from brevitas import nn as qnn
from torch import nn

from fhe_lint.settings import Settings
from fhe_lint.torch import AccumulatorGuard, lint_module

DIGITS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "brevitas" / "digits.npz"


def mlp(hidden: int, w_bits: int, a_bits: int) -> nn.Module:
    return nn.Sequential(
        qnn.QuantIdentity(bit_width=a_bits, return_quant_tensor=True),
        qnn.QuantLinear(64, hidden, bias=True, weight_bit_width=w_bits),
        qnn.QuantReLU(bit_width=a_bits, return_quant_tensor=True),
        qnn.QuantLinear(hidden, 10, bias=True, weight_bit_width=w_bits),
    )


def cnn(channels: tuple[int, int], w_bits: int, a_bits: int) -> nn.Module:
    c1, c2 = channels
    return nn.Sequential(
        qnn.QuantIdentity(bit_width=a_bits, return_quant_tensor=True),
        qnn.QuantConv2d(1, c1, 3, bias=True, weight_bit_width=w_bits),
        qnn.QuantReLU(bit_width=a_bits, return_quant_tensor=True),
        qnn.QuantConv2d(c1, c2, 3, bias=True, weight_bit_width=w_bits),
        qnn.QuantReLU(bit_width=a_bits, return_quant_tensor=True),
        nn.Flatten(),
        qnn.QuantLinear(c2 * 4 * 4, 10, bias=True, weight_bit_width=w_bits),
    )


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return float((out.argmax(1) == y).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--channels", default="6,12", help="CNN channels C1,C2")
    p.add_argument("--weight-bits", type=int, default=7)
    p.add_argument("--act-bits", type=int, default=7)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate (cosine decay over the epochs)")
    p.add_argument("--guard", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--penalty", action=argparse.BooleanOptionalAction, default=False,
                   help="add the guard's penalty() to the loss at every step (step() alone does as well on the digits)")
    p.add_argument("--strength", type=float, default=0.0005, help="weight of the guard's penalty in the loss")
    p.add_argument("--every", type=int, default=2, help="work the penalty's gradient out on every k-th step, reuse it between")
    p.add_argument("--n-max", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write the QONNX export here")
    p.add_argument("--data", type=Path, default=DIGITS, help="digits .npz with x (1797, 64) in [0, 1] and y")
    a = p.parse_args()

    torch.manual_seed(a.seed)
    data = np.load(a.data)
    x, y = torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"], dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(a.seed))
    train, held = order[360:], order[:360]
    channels = tuple(int(c) for c in a.channels.split(","))
    model = mlp(a.hidden, a.weight_bits, a.act_bits) if a.arch == "mlp" else cnn(channels, a.weight_bits, a.act_bits)
    if a.arch == "cnn":  # 8 x 8 images, one channel: the model's first op is its input quantizer,
        x = x.reshape(-1, 1, 8, 8)  # as Concrete ML requires
    example = x[:1]
    guard = AccumulatorGuard(model, example, n_max=a.n_max, every=a.every) if a.guard else None
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    loss_fn = nn.CrossEntropyLoss()
    grown, projected, pruned, guard_seconds, start = 0, 0, 0, 0.0, time.perf_counter()
    for _ in range(a.epochs):
        for batch in train[torch.randperm(len(train))].split(64):
            loss = loss_fn(model(x[batch]), y[batch])
            if guard is not None and a.penalty:
                t = time.perf_counter()
                loss = loss + guard.penalty(a.strength)
                guard_seconds += time.perf_counter() - t
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if guard is not None:
            t = time.perf_counter()
            for change in guard.step().values():
                grown += change.grown
                projected += change.projected
                pruned += change.pruned
            guard_seconds += time.perf_counter() - t
    if guard is not None:
        guard.finalize()
    seconds = time.perf_counter() - start
    report = lint_module(model, example, Settings(n_max=a.n_max, select=frozenset({"FHE001"})))
    if a.out is not None:
        from fhe_lint.torch.export import export

        model.eval()
        export(model, example, a.out)
    print(json.dumps({"accuracy": round(100 * accuracy(model, x, y), 2),
                      "held_out_accuracy": round(100 * accuracy(model, x[held], y[held]), 2),
                      "fits": not report.diagnostics, "max_bits": max(layer.accumulator_bits or 0
                                                                       for layer in report.layers),
                      "grown": grown, "projected": projected, "pruned": pruned,
                      "zero_weights": sum(int((m.weight == 0).sum()) for m in model.modules() if hasattr(m, "weight_quant")),
                      "seconds": round(seconds, 1), "guard_seconds": round(guard_seconds, 2)}))


if __name__ == "__main__":
    main()
