"""The registry of rule codes. A code is never reused: retire a rule, do not renumber it."""

from __future__ import annotations

from fhe_lint.rule import Rule
from fhe_lint.rules import (
    fhe001_accumulator_overflow,
    fhe002_nonzero_budget,
    fhe003_omega_below_one,
    fhe004_unsupported_op,
    fhe005_unknown_range,
    fhe006_invalid_onnx,
    fhe007_wide_lookup,
)

RULES: dict[str, Rule] = {
    m.RULE.code: m.RULE
    for m in (
        fhe001_accumulator_overflow,
        fhe002_nonzero_budget,
        fhe003_omega_below_one,
        fhe004_unsupported_op,
        fhe005_unknown_range,
        fhe006_invalid_onnx,
        fhe007_wide_lookup,
    )
}
