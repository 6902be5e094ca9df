"""fhe-lint benchmark: every figure a ratio measured in the same run, on this machine.

    python bench/run.py                 # builds the synthetic models (bench/make_models.py) first

1. lint time / (onnx.load + numpy conversion of every initializer)   target <= 1.2
2. --fix time / lint time                                              target <= 2
3. peak RSS / total weight bytes: lint                                 target <= 1.5
                                    fix (every neuron violates)         target <= 2.5
4. `fhe-lint tiny.onnx` and `fhe-lint rule FHE001` / `python -c "import numpy"`
                                                                       target <= 3.5 and <= 1.5
5. Concrete ML compile time / fhe-lint time on the same fixture         target >= 100
   (measured with --concrete-python, a Python that has concrete-ml; else Concrete ML's own
   recorded compile time from the fixtures' truth.json, marked as recorded)
Each time is the best of --repeat runs, each in a fresh process (start-up included): as for
timeit, noise from a shared machine only ever adds time, so the minimum is the most repeatable.
"""

from __future__ import annotations

import argparse
import compileall
import json
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tabulate import tabulate

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures" / "brevitas"

# A child that runs one command and prints its wall time and its own peak RSS.
_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys, time
    t = time.perf_counter()
    p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, p.returncode)
""")
_BASELINE = ("import sys, onnx; from onnx import numpy_helper; m = onnx.load(sys.argv[1]); "
             "arrays = [numpy_helper.to_array(t) for t in m.graph.initializer]")


def measure(*cmds: list[str], repeat: int) -> list[tuple[float, int]]:
    """Per command, the best wall seconds and the max peak RSS bytes over ``repeat`` fresh
    processes. Commands run in turn within each round, so that a machine slowing down or
    speeding up over the run shifts every command alike and leaves their ratios alone."""
    runs: list[list[tuple[float, int]]] = [[] for _ in cmds]
    for _ in range(repeat):
        for cmd, out in zip(cmds, runs):
            p = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
            seconds, rss, _ = p.stdout.split()
            out.append((float(seconds), int(rss)))
    return [(min(s for s, _ in r), max(m for _, m in r)) for r in runs]


def weight_bytes(path: Path) -> int:
    import numpy as np
    import onnx

    m = onnx.load(path, load_external_data=False)
    return sum(int(np.prod(t.dims)) * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in m.graph.initializer if t.name.endswith(".weight"))


def lint_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fhe_lint", *args]


def concrete_seconds(concrete_python: str | None, name: str) -> tuple[float, str]:
    if concrete_python:
        code = textwrap.dedent(f"""
            import time, numpy as np, onnx
            from concrete.ml.torch.compile import compile_onnx_model
            m = onnx.load({str(FIXTURES / f'{name}.onnx')!r}); x = np.load({str(FIXTURES / f'{name}.calib.npy')!r})
            t = time.perf_counter(); compile_onnx_model(m, x, import_qat=True); print(time.perf_counter() - t)
        """)
        out = subprocess.run([concrete_python, "-c", code], capture_output=True, text=True)
        if out.returncode == 0:
            return float(out.stdout.strip().splitlines()[-1]), "measured"
    truth = json.loads((FIXTURES / "truth.json").read_text())
    return float(truth[name]["calibration"]["seconds"]), "recorded in truth.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="where to build the models (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concrete-python", help="a Python interpreter with concrete-ml installed")
    args = parser.parse_args()
    out = args.models or Path(tempfile.mkdtemp(prefix="fhe-lint-bench-"))
    subprocess.run([sys.executable, str(HERE / "make_models.py"), str(out)], check=True, stdout=subprocess.DEVNULL)

    rows = []
    # pip compiles an installed package's bytecode; an editable checkout (PYTHONDONTWRITEBYTECODE
    # is common in containers) would otherwise recompile every module on every run
    for package in ("fhe_lint", "rules"):
        compileall.compile_dir(HERE.parent / package, quiet=1)
    for name in ("mlp_25m.onnx", "cnn_10m.onnx", "mlp_25m_ext.onnx"):
        model = out / name
        (base_t, base_rss), (lint_t, lint_rss), (fix_t, fix_rss) = measure(
            [sys.executable, "-c", _BASELINE, str(model)],
            lint_cmd(str(model), "--quiet", "--select", "FHE001"),
            lint_cmd(str(model), "--quiet", "--select", "FHE001", "--fix", "-o", str(out / f"fixed_{name}"),
                     "--max-prune", "100", "--max-damage", "100"),
            repeat=args.repeat)
        wb = weight_bytes(model)
        rows += [
            [name, "lint / load+convert", f"{lint_t:.2f} s / {base_t:.2f} s", f"{lint_t / base_t:.2f}", "<= 1.2"],
            [name, "fix / lint", f"{fix_t:.2f} s / {lint_t:.2f} s", f"{fix_t / lint_t:.2f}", "<= 2"],
            [name, "peak RSS / weight bytes (lint)", f"{lint_rss / 2**20:.0f} MiB / {wb / 2**20:.0f} MiB",
             f"{lint_rss / wb:.2f}", "<= 1.5"],
            [name, "peak RSS / weight bytes (fix)", f"{fix_rss / 2**20:.0f} MiB / {wb / 2**20:.0f} MiB",
             f"{fix_rss / wb:.2f}", "<= 2.5"],
            [name, "peak RSS / weight bytes (load+convert)", f"{base_rss / 2**20:.0f} MiB / {wb / 2**20:.0f} MiB",
             f"{base_rss / wb:.2f}", "(reference)"],
        ]
    (tiny_t, _), (rule_t, _), (numpy_t, _) = measure(
        lint_cmd(str(FIXTURES / "mlp_w2a2.onnx"), "--quiet"), lint_cmd("rule", "FHE001"),
        [sys.executable, "-c", "import numpy"], repeat=args.repeat * 3)
    rows += [["mlp_w2a2.onnx", "lint / python -c 'import numpy'", f"{tiny_t:.3f} s / {numpy_t:.3f} s",
              f"{tiny_t / numpy_t:.2f}", "<= 3.5"],
             ["rule FHE001", "explain / python -c 'import numpy'", f"{rule_t:.3f} s / {numpy_t:.3f} s",
              f"{rule_t / numpy_t:.2f}", "<= 1.5"]]
    for fixture in ("cnn_w6a6_overflow", "mlp_w6a6_unsigned_in"):
        # a real model for the fix: only some neurons violate (the synthetic ones above: all of them)
        (verdict_t, _), (fix_t, _) = measure(
            lint_cmd(str(FIXTURES / f"{fixture}.onnx"), "--quiet"),
            lint_cmd(str(FIXTURES / f"{fixture}.onnx"), "--quiet", "--fix", "-o", str(out / f"fixed_{fixture}.onnx")),
            repeat=args.repeat * 3)
        compile_t, how = concrete_seconds(args.concrete_python, fixture)
        rows.append([f"{fixture}.onnx", f"Concrete ML compile ({how}) / fhe-lint",
                     f"{compile_t:.1f} s / {verdict_t:.3f} s", f"{compile_t / verdict_t:.0f}x", ">= 100x"])
        rows.append([f"{fixture}.onnx", "fix / lint", f"{fix_t:.3f} s / {verdict_t:.3f} s",
                     f"{fix_t / verdict_t:.2f}", "<= 2"])
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}, "
          f"{__import__('os').cpu_count()} cores")
    print(tabulate(rows, headers=["model", "figure", "measured", "ratio", "target"]))


if __name__ == "__main__":
    main()
