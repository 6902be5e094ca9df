"""What Concrete will report after compiling, estimated from the shipped table of its own figures
(``concrete_cost.json``, made by ``scripts/make_cost_table.py``): complexity, key sizes and
seconds per inference.

Concrete gives every distinct lookup width its own parameter set (a partition) with its own
keys, so keys add up per width, while complexity adds up per lookup. A lookup's parameters
also depend on the noise around it: the norm of the weights before it and of the layer its
outputs feed, and whether its layer reads the model's fresh input or another lookup's output.
Concrete's optimizer weighs these jointly; the table holds them one layer at a time, so the
estimate is a model of the optimizer, not the optimizer (measured against Concrete ML in
``bench/fhe_cost.py``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from fhe_lint.analysis.cost import LayerCost


@dataclass(frozen=True)
class LookupLayer:
    """One layer's lookups as the estimate needs them."""

    count: int  # lookups per inference (without the rounding's own)
    bits: int  # their width before rounding
    norm2_bits: int  # log2 of the largest squared L2 norm among the neurons before and after
    reads_model_input: bool


@dataclass(frozen=True)
class Estimate:
    complexity: float
    bootstrap_key_bytes: int
    keyswitch_key_bytes: int
    seconds: float
    seconds_from: str  # which machine's timing
    concrete: str  # the Concrete release the figures are from
    p_error: float  # the error probability per lookup they were compiled for
    beyond_table: bool = False  # a width past the table: figures of its widest entry, a lower bound
    decomposed: bool = False  # every lookup decomposed (circuit bootstrapping), not one bootstrap
    alternative: Estimate | None = None  # the other kind of lookup, when its cost is close

    @property
    def key_bytes(self) -> int:
        return self.bootstrap_key_bytes + self.keyswitch_key_bytes

    def as_json(self) -> dict[str, Any]:
        out = {"complexity": self.complexity, "bootstrap_key_bytes": self.bootstrap_key_bytes,
               "keyswitch_key_bytes": self.keyswitch_key_bytes, "seconds": self.seconds,
               "seconds_from": self.seconds_from, "concrete": self.concrete, "p_error": self.p_error,
               "beyond_table": self.beyond_table,
               "decomposed_lookups": self.decomposed}
        if self.alternative is not None:
            out["alternative"] = self.alternative.as_json()
        return out


@cache
def table() -> dict[str, Any]:
    return json.loads(files("fhe_lint.analysis").joinpath("concrete_cost.json").read_text())


def calibration_file() -> Path:
    """Where ``fhe-lint calibrate-cost`` keeps this machine's timing (XDG cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fhe-lint" / "cost-calibration.json"


def _timing() -> tuple[dict[bool, float], str]:
    """Seconds per unit of complexity, for single (False) and decomposed (True) lookups."""
    def rates(figures: dict[str, Any]) -> dict[bool, float]:
        return {False: float(figures["seconds_per_complexity_single"]),
                True: float(figures["seconds_per_complexity_decomposed"])}

    try:
        mine = json.loads(calibration_file().read_text())
        return rates(mine), f"this machine (fhe-lint calibrate-cost, {mine['date']})"
    except (OSError, ValueError, KeyError, TypeError):
        ref = table()["reference_machine"]
        return rates(ref), f"the reference machine ({ref['cores']} cores, {ref['cpu']})"


def _point(entries: list[dict[str, Any]], bits: int, kind: str, level: int | None, norm2_bits: int) -> dict | None:
    same = [e for e in entries if e["bits"] == bits and e["input"] == kind and e.get("rounding_bits") == level]
    return min(same, key=lambda e: (abs(e["norm2_bits"] - norm2_bits), -e["norm2_bits"])) if same else None


def _entry(layer: LookupLayer, rounding: int | None, decomposed: bool) -> tuple[dict[str, Any], bool] | None:
    """The table point for this layer: its rounding, the nearest tabulated norm, and the cheapest
    width at least its own of the asked kind (a narrow lookup runs on a wider lookup's
    parameters, which Concrete picks when they cost less); None when no single bootstrap is
    wide enough."""
    entries = table()["lookups"]
    widest = max(e["bits"] for e in entries)
    bits = max(2, min(layer.bits, widest))
    if rounding is not None and rounding < bits:
        # The rounding's bootstraps see the sum's noise, which lies between a fresh input's (the
        # table's model-fed points) and a lookup's (its lookup-fed points): their geometric mean,
        # within 2x of Concrete ML on the rounded fixtures where either end alone is not.
        level = max((e["rounding_bits"] for e in entries if e.get("rounding_bits", 99) <= rounding), default=None)
        ends = [_point(entries, bits, kind, level, layer.norm2_bits) for kind in ("model", "lookup")]
        if level is not None and None not in ends:
            mean = {k: math.sqrt(float(ends[0][k]) * float(ends[1][k]))
                    for k in ("complexity", "bootstrap_key_bytes", "keyswitch_key_bytes")}
            return {**ends[0], **mean}, layer.bits > widest
    candidates = [e for b in range(bits, widest + 1) if (e := _point(entries, b, "lookup", None, layer.norm2_bits))
                  and _decomposed(e) == decomposed]
    if not candidates:
        return None
    return min(candidates, key=lambda e: e["complexity"]), layer.bits > widest


def _decomposed(e: dict[str, Any]) -> bool:
    """A lookup too wide for one bootstrap's polynomial (which needs 2**bits coefficients) is
    decomposed (Concrete's circuit bootstrapping); the table shows it from 11 bits on. A rounded
    lookup is as wide as its rounding."""
    return e["polynomial_size"] < 2 ** e.get("rounding_bits", e["bits"])


PARAMETERS = ("polynomial_size", "glwe_dimension", "lwe_dimension", "level")


def model_estimate(costs: dict[str, LayerCost], rounding: int | None) -> Estimate | None:
    """The estimate of a model's layer costs (None when a layer's count is unknown)."""
    if any(c.tlu_count is None for c in costs.values()):
        return None
    lookups = [LookupLayer(c.lookups, c.bits, c.norm2_bits, c.reads_model_input)
               for c in costs.values() if c.lookups and c.bits is not None]
    # a max pool compares the quantized values: lookups about one bit wider than them
    lookups += [LookupLayer(c.pool_lookups, (c.next_input_bits or c.bits) + 1, 1, False)
                for c in costs.values() if c.pool_lookups and c.bits is not None]
    return estimate(lookups, rounding)


def estimate(layers: list[LookupLayer], rounding: int | None) -> Estimate:
    """Concrete keeps a circuit's lookups either all single bootstraps or all decomposed (never
    seen mixed in Concrete ML's compiles) and picks the cheaper: both are costed, the cheaper is
    the estimate, and the other rides along when it is close (within 1.5x), since their keys can
    differ 40-fold (a 9/10-bit CNN: 1 GB decomposed, 36 GB not)."""
    timing = _timing()  # the calibration file read once per estimate, not per kind of lookup
    feasible = [e for d in (False, True) if (e := _strategy(layers, rounding, d, timing)) is not None]
    best, *other = sorted(feasible, key=lambda e: e.complexity)
    close = other and other[0].complexity <= 1.5 * best.complexity and other[0].key_bytes != best.key_bytes
    return replace(best, alternative=other[0] if close else None)


def _strategy(layers: list[LookupLayer], rounding: int | None, decomposed: bool,
              timing: tuple[dict[bool, float], str]) -> Estimate | None:
    """The circuit with every lookup of one kind; None when some lookup cannot be of that kind."""
    complexity, seconds, partitions, beyond, used = 0.0, 0.0, {}, False, []
    per_unit, source = timing
    for layer in layers:
        if not layer.count:
            continue
        found = _entry(layer, rounding, decomposed)
        if found is None:
            return None
        e, past = found
        used.append(e)
        beyond |= past
        complexity += layer.count * e["complexity"]
        seconds += layer.count * e["complexity"] * per_unit[_decomposed(e)]
        # One key set per parameter set; rounded layers share the rounding's small one and the
        # one of their common target width.
        key = ("rounded",) if "rounding_bits" in e else tuple(e[k] for k in PARAMETERS)
        keys = (e["bootstrap_key_bytes"], e["keyswitch_key_bytes"])
        partitions[key] = max(partitions.get(key, keys), keys)
    bootstrap_keys, keyswitch_keys = (int(sum(k[i] for k in partitions.values())) for i in (0, 1))
    return Estimate(complexity, bootstrap_keys, keyswitch_keys, seconds, source, table()["concrete_python"],
                    table()["p_error"], beyond, any(_decomposed(e) for e in used))
