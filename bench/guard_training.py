"""The training guard against no guard and against a fix after training, on the digits.

    python bench/guard_training.py

Each configuration trains examples/train_digits.py in a fresh process (60 epochs unless
said, seed 0; 21 epochs is the issue's own set-up),
with and without the guard (training is seeded: a run gives the same model again);
"guard's calls" is the time inside the guard's own calls (penalty, step) against the rest of
the same guarded run, which a machine's drift between runs does not move (whole runs vary by
+-15 % here: the overhead is bench/guard_overhead.py's to measure). The
post-training column is `fhe-lint --fix` (auto strategy, the 300 first digits as calibration)
on the unguarded export. Needs the torch extra.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from tabulate import tabulate

from fhe_lint.analysis.execute import evaluate

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "train_digits.py"
CONFIGS = [["--arch", "mlp", "--hidden", "192", "--weight-bits", "7", "--act-bits", "7"],
           ["--arch", "mlp", "--hidden", "192", "--weight-bits", "7", "--act-bits", "7", "--epochs", "21"],
           ["--arch", "mlp", "--hidden", "128", "--weight-bits", "7", "--act-bits", "7"],
           ["--arch", "mlp", "--hidden", "256", "--weight-bits", "8", "--act-bits", "8"],
           ["--arch", "cnn", "--channels", "8,16", "--weight-bits", "7", "--act-bits", "7"]]


def train(args: list[str], guard: bool, out: Path) -> dict:
    flag = "--guard" if guard else "--no-guard"
    p = subprocess.run([sys.executable, str(EXAMPLE), *args, flag, "--out", str(out)], capture_output=True,
                       text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def fixed_accuracy(model: Path, digits: np.lib.npyio.NpzFile, tmp: Path) -> str:
    import onnx

    calib = tmp / "calib.npy"
    np.save(calib, digits["x"][:300].astype(np.float32))
    out = tmp / "fixed.onnx"
    p = subprocess.run([sys.executable, "-m", "fhe_lint", str(model), "--fix", "-o", str(out), "--select", "FHE001",
                        "--max-prune", "100", "--calibration", str(calib), "-q"], capture_output=True, text=True)
    if p.returncode != 0:
        return "refused"
    (logits,) = evaluate(onnx.load(out), digits["x"].astype(np.float32), [onnx.load(out).graph.output[0].name])
    return f"{100 * float((logits.argmax(1) == digits['y']).mean()):.2f}"


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    digits = np.load(HERE.parent / "tests" / "fixtures" / "brevitas" / "digits.npz")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        for args in CONFIGS:
            free, guarded = (train(args, guard, tmp_path / f"{guard}.onnx") for guard in (False, True))
            rows.append([" ".join(args).replace("--", ""), free["accuracy"], free["max_bits"],
                         fixed_accuracy(tmp_path / "False.onnx", digits, tmp_path), guarded["accuracy"],
                         guarded["max_bits"], guarded["grown"], guarded["projected"], guarded["pruned"],
                         f"{100 * guarded['guard_seconds'] / (guarded['seconds'] - guarded['guard_seconds']):.0f} %"])
    print(tabulate(rows, headers=["model", "no guard %", "bits", "then --fix %", "guard %", "bits", "grown",
                                  "projected", "pruned", "guard's calls"]))


if __name__ == "__main__":
    main()
