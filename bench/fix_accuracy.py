"""What each fix strategy costs in accuracy, time and memory, on every overflowing fixture.

    python bench/fix_accuracy.py [--fixtures DIR]

Accuracy is on all 1,797 labelled digits (tests/fixtures/brevitas/digits.npz), each model run
by onnx's reference evaluator with QONNX quantizers; the calibration data is the fixture's own
``.calib.npy`` (300 digits). Each fix runs as ``fhe-lint MODEL --fix -o OUT`` in a fresh
process, measured as bench/run.py measures every command (wall time, the process's own peak RSS).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from tabulate import tabulate

from fhe_lint.analysis.execute import evaluate
from run import measure  # bench/run.py: one way to time a command and read its peak RSS

HERE = Path(__file__).resolve().parent
RUNS = [("prune", False), ("bits", False), ("prune", True), ("compensate", True), ("bits", True), ("auto", True)]


def accuracy(path: Path, digits) -> float:
    model = onnx.load(path)
    x = digits["x"].reshape(-1, 1, 8, 8) if "cnn" in path.name else digits["x"]
    (out,) = evaluate(model, x, [model.graph.output[0].name])
    return 100 * float(np.mean(out.argmax(axis=1) == digits["y"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=HERE.parent / "tests" / "fixtures" / "brevitas")
    a = parser.parse_args()
    digits = np.load(a.fixtures / "digits.npz")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("mlp_w6a6_unsigned_in", "cnn_w6a6_overflow", "mlp_w7a7_overflow"):
            src = a.fixtures / f"{name}.onnx"
            before = accuracy(src, digits)
            for strategy, with_data in RUNS:
                out = Path(tmp) / f"{name}-{strategy}-{with_data}.onnx"
                args = [str(src), "--fix", "-o", str(out), "--select", "FHE001", "--format", "json",
                        "--fix-strategy", strategy, "--max-prune", "100"]
                if with_data:
                    args += ["--calibration", str(a.fixtures / f"{name}.calib.npy")]
                fix, seconds, rss = _timed(args, Path(tmp) / "report.json")
                changed = fix["layers"] or {}
                bits = ", ".join(f"{c['weight_bits'][0]}->{c['weight_bits'][1]}" for c in changed.values()
                                 if "weight_bits" in c)
                rows.append([name, f"{strategy}{'' if with_data else ' (no data)'}", f"{before:.2f}",
                             "refused" if fix["refused"] else f"{accuracy(out, digits):.2f}",
                             fix.get("strategy") if strategy == "auto" else "",
                             sum(c["pruned"] for c in changed.values()), sum(c["moved"] for c in changed.values()),
                             bits, f"{seconds:.1f}", rss // 2**20])
    print(tabulate(rows, headers=["fixture", "strategy", "before %", "after %", "auto chose", "pruned",
                                  "moved", "weight bits", "fix s", "peak MiB"], tablefmt="github"))



def _timed(args: list[str], report: Path) -> tuple[dict, float, int]:
    """The fix's JSON report, its wall seconds and its peak RSS in bytes."""
    ((seconds, rss),) = measure([sys.executable, "-m", "fhe_lint", *args, "--output-file", str(report)], repeat=1)
    return json.loads(report.read_text())["files"][0]["fix"], seconds, rss

if __name__ == "__main__":
    main()
