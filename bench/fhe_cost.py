"""fhe-lint's FHE cost estimate against Concrete ML's compile, model by model.

    python bench/fhe_cost.py MODEL.onnx [...] --concrete-ml PYTHON [--rounding-bits N] [--run]
    python bench/fhe_cost.py MODEL.onnx [...] --overhead

Each model is linted with its ``MODEL.calib.npy`` beside it (when there is one) and compiled by
Concrete ML in PYTHON (an interpreter with concrete-ml installed: it pins numpy < 2 and an old
torch, so it lives in its own environment) on the same data; ``--run`` also times one encrypted
inference (key generation excluded). Prints a markdown table of the ratios Concrete ML /
fhe-lint. ``--overhead`` instead times, in one process, what the cost and its estimate add to a
lint (best of three; the goal is at most 10 %).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

COMPILE = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np, onnx
from concrete.ml.torch.compile import compile_onnx_model
path, calib, rounding, run = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
x = np.load(calib).astype(np.float32)
m = compile_onnx_model(onnx.load(path), x, import_qat=True,
                       rounding_threshold_bits=None if rounding == "-" else int(rounding))
c = m.fhe_circuit
out = {"tlu_count": c.statistics["programmable_bootstrap_count"], "complexity": c.complexity,
       "keys": c.size_of_bootstrap_keys + c.size_of_keyswitch_keys,
       "max_bits": int(c.graph.maximum_integer_bit_width())}
if run:
    c.keygen()
    start = time.perf_counter()
    m.forward(x[:1], fhe="execute")
    out["seconds"] = time.perf_counter() - start
print(json.dumps(out))
"""


def lint(model: Path, calib: Path, rounding: int | None) -> dict:
    args = [sys.executable, "-m", "fhe_lint", str(model), "--format", "json", "--calibration", str(calib)]
    if rounding is not None:
        args += ["--rounding-bits", str(rounding)]
    out = json.loads(subprocess.run(args, capture_output=True, text=True).stdout)
    return out["files"][0]["fhe_cost"]


def concrete_ml(python: str, model: Path, calib: Path, rounding: int | None, run: bool) -> dict:
    p = subprocess.run([python, "-c", COMPILE, str(model), str(calib), str(rounding or "-"), str(int(run))],
                       capture_output=True, text=True)
    if p.returncode:
        return {"error": p.stderr.strip().splitlines()[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def overhead(model: Path) -> None:
    import time

    from fhe_lint.analysis.cost import model_cost
    from fhe_lint.analysis.estimate import LookupLayer, estimate
    from fhe_lint.linter import lint_path
    from fhe_lint.settings import Settings

    lint = cost = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        result = lint_path(model, Settings())
        linted = time.perf_counter()
        costs = model_cost(result.analysis, None)
        estimate([LookupLayer(c.lookups, c.bits, c.norm2_bits, c.reads_model_input)
                  for c in costs.values() if c.lookups and c.bits is not None], None)
        lint, cost = min(lint, linted - start), min(cost, time.perf_counter() - linted)
    print(f"{model.name}: lint {lint:.3f} s, cost and estimate {cost:.3f} s ({100 * cost / lint:.1f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--concrete-ml", metavar="PYTHON")
    parser.add_argument("--rounding-bits", type=int)
    parser.add_argument("--run", action="store_true")
    parser.add_argument("--overhead", action="store_true")
    args = parser.parse_args()
    if args.overhead:
        for model in args.models:
            overhead(model)
        return
    if args.concrete_ml is None:
        parser.error("--concrete-ml PYTHON is needed unless --overhead")
    print("| model | bootstraps CML / fhe-lint | max bits | complexity CML / fhe-lint (ratio) "
          "| keys GB CML / fhe-lint (ratio) | seconds CML / fhe-lint |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        calib = model.with_suffix(".calib.npy")
        if not calib.exists():
            print(f"| {model.name} | no {calib.name} beside it | | | | |")
            continue
        mine = lint(model, calib, args.rounding_bits)
        truth = concrete_ml(args.concrete_ml, model, calib, args.rounding_bits, args.run)
        e = mine.get("estimate", {})
        if "error" in truth or not e:
            print(f"| {model.name} | {truth.get('error', 'no estimate')} | | | | |")
            continue
        keys = (e["bootstrap_key_bytes"] + e["keyswitch_key_bytes"]) / 1e9
        seconds = f"{truth['seconds']:.3g} / {e['seconds']:.3g}" if "seconds" in truth else f"- / {e['seconds']:.3g}"
        print(f"| {model.name} | {truth['tlu_count']} / {mine['tlu_count']} | {truth['max_bits']} / {mine['max_bits']} "
              f"| {truth['complexity']:.3g} / {e['complexity']:.3g} ({truth['complexity'] / e['complexity']:.2f}) "
              f"| {truth['keys'] / 1e9:.2f} / {keys:.2f} ({truth['keys'] / 1e9 / keys:.2f}) | {seconds} |", flush=True)


if __name__ == "__main__":
    main()
