"""Does fhe-lint's rounding advice keep accuracy? Concrete ML, in simulation, on all digits.

    python bench/rounding_advice.py MODEL.onnx [...] --concrete-ml PYTHON --digits DIGITS.npz

For each model (calibration data in MODEL.calib.npy beside it): fhe-lint's advised
rounding_threshold_bits and estimate, then Concrete ML compiles the model without rounding and
with the advice and runs every digit through ``fhe="simulate"`` (exact FHE semantics in the clear):
accuracy and Concrete's complexity for both. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SIMULATE = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np, onnx
from concrete.ml.torch.compile import compile_onnx_model
path, calib, digits, rounding = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
x = np.load(calib).astype(np.float32)
d = np.load(digits)
xs, ys = d["x"].astype(np.float32).reshape(-1, *x.shape[1:]), d["y"]
m = compile_onnx_model(onnx.load(path), x, import_qat=True,
                       rounding_threshold_bits=None if rounding == "-" else int(rounding))
pred = m.forward(xs, fhe="simulate").argmax(1)
print(json.dumps({"accuracy": float((pred == ys).mean()), "complexity": m.fhe_circuit.complexity}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--concrete-ml", required=True, metavar="PYTHON")
    parser.add_argument("--digits", required=True, type=Path)
    args = parser.parse_args()
    print("| model | advised rounding | accuracy unrounded / rounded | complexity unrounded / rounded "
          "(Concrete ML) | fhe-lint's rounded estimate |")
    print("|---|---|---|---|---|")
    for model in args.models:
        calib = model.with_suffix(".calib.npy")
        out = subprocess.run([sys.executable, "-m", "fhe_lint", str(model), "--format", "json",
                              "--calibration", str(calib)], capture_output=True, text=True).stdout
        advice = json.loads(out)["files"][0]["fhe_cost"].get("rounding_advice")
        if advice is None:
            print(f"| {model.name} | none | | | |")
            continue
        runs = []
        for rounding in ("-", str(advice["rounding_bits"])):
            p = subprocess.run([args.concrete_ml, "-c", SIMULATE, str(model), str(calib), str(args.digits), rounding],
                               capture_output=True, text=True)
            runs.append(json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None)
        if None in runs:
            print(f"| {model.name} | {advice['rounding_bits']} | Concrete ML failed | | |")
            continue
        plain, rounded = runs
        print(f"| {model.name} | {advice['rounding_bits']} "
              f"| {100 * plain['accuracy']:.2f} / {100 * rounded['accuracy']:.2f} % "
              f"| {plain['complexity']:.2g} / {rounded['complexity']:.2g} | {advice['estimate']['complexity']:.2g} |",
              flush=True)


if __name__ == "__main__":
    main()
