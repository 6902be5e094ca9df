"""Mutation fuzzing of the fixtures' bytes: lint (and fix) must only ever fail with a typed error.

    python tests/fuzz/mutate_fixtures.py --cases 10000      # the long run
tests/test_fuzz_sample.py runs a small sample of the same cases in the default test suite.
Any exception other than FheLintError is a bug (the CLI would print it as an internal error).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from fhe_lint.errors import FheLintError
from fhe_lint.fix import fix_model
from fhe_lint.linter import lint_model
from fhe_lint.io.model_io import read_model
from fhe_lint.settings import Settings

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "brevitas"


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flip bytes, overwrite a run, delete a run, duplicate a run, truncate, splice ints."""
    b = bytearray(data)
    kind = int(rng.integers(6))
    i = int(rng.integers(len(b)))
    n = int(rng.integers(1, 64))
    if kind == 0:
        for j in rng.integers(len(b), size=int(rng.integers(1, 8))):
            b[j] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        b[i:i + n] = rng.bytes(n)
    elif kind == 2:
        del b[i:i + n]
    elif kind == 3:
        b[i:i] = b[i:i + n]
    elif kind == 4:
        del b[i:]
    else:  # varints near protobuf's interesting values
        b[i:i + 1] = bytes([int(rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x08, 0x12, 0x3A]))])
    return bytes(b)


def run(cases: int, seed: int = 0) -> tuple[Counter, list[str]]:
    rng = np.random.default_rng(seed)
    originals = [(p, p.read_bytes()) for p in sorted(FIXTURES.glob("*.onnx"))]
    outcomes: Counter = Counter()
    crashes: list[str] = []
    settings = Settings(max_prune=100.0)
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(cases):
            path, data = originals[case % len(originals)]
            target = Path(tmp) / path.name  # read from a file: the mapped reader is what users run
            target.unlink(missing_ok=True)  # a new file: the last case's mapping keeps the old one
            target.write_bytes(mutate(data, rng))
            try:
                model, tensors, complaint = read_model(target)
                result = lint_model(model, target, settings, tensors, complaint)
                if result.fails(False):
                    fix_model(result)
                outcomes["linted"] += 1
            except FheLintError:
                outcomes["typed error"] += 1
            except Exception:  # noqa: BLE001 - that is what we are looking for
                outcomes["CRASH"] += 1
                crashes.append(f"case {case} ({path.name}):\n{traceback.format_exc(limit=-3)}")
    return outcomes, crashes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    outcomes, crashes = run(args.cases, args.seed)
    for c in crashes[:5]:
        print(c)
    print(f"{args.cases} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
