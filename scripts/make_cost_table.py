"""Regenerate fhe_lint/analysis/concrete_cost.json: Concrete's figures per lookup width.

Run with the concrete extra (concrete-python; the shipped table was made with the release
Concrete ML 1.9 pins): python scripts/make_cost_table.py [--out PATH] [--max-bits 16]
It compiles about 200 small circuits (a few minutes on two cores) and times a few encrypted
runs on this machine, which become the table's reference machine for seconds per inference.
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

from fhe_lint.analysis.concrete_cost import OPTIONS, calibrate, concrete_version, layer_shape, measure_lookup

TABLE = Path(__file__).resolve().parents[1] / "fhe_lint" / "analysis" / "concrete_cost.json"
ROUNDING_TO = (2, 3, 4, 5, 6, 7, 8)  # Concrete ML's usual rounding_threshold_bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TABLE)
    parser.add_argument("--max-bits", type=int, default=16)
    args = parser.parse_args()
    widths = range(2, args.max_bits + 1)
    lookups = []

    def measure(*args, **kwargs) -> None:
        lookups.append(measure_lookup(*args, **kwargs))
        print(json.dumps(lookups[-1]), flush=True)

    for p in widths:
        for nu in sorted({*range(1, 2 * p - 2, 4), 2 * p - 3}):
            if layer_shape(p, nu) is not None:
                measure(p, nu)
        for fresh in (False, True):  # rounding's bootstraps depend on the sum's own noise
            for r in ROUNDING_TO:
                if r < p:  # rounded layers: one norm, the one a layer of that width usually has
                    measure(p, next(nu for nu in (p + 2, 2 * p - 3, p) if layer_shape(p, nu)), rounding=r, fresh=fresh)
    machine = calibrate(print)
    table = {
        "concrete_python": concrete_version(), "generated": date.today().isoformat(),
        "p_error": OPTIONS["p_error"], "options": {k: v for k, v in OPTIONS.items() if k != "p_error"},
        "reference_machine": {"cpu": platform.processor() or platform.machine(), **machine},
        "lookups": lookups,
    }
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
