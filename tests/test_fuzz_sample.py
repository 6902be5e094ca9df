"""A sample of the mutation fuzzer (tests/fuzz) in the default run: no untyped exception."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

from mutate_fixtures import run  # noqa: E402


def test_mutated_fixtures_only_raise_typed_errors():
    outcomes, crashes = run(cases=400, seed=1)
    assert not crashes, crashes[0]
    assert outcomes["typed error"] > 0 and outcomes["linted"] > 0  # both paths were exercised
