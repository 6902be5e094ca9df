"""Concrete's own figures for one table lookup: what ``scripts/make_cost_table.py`` ships and what
``fhe-lint calibrate-cost`` times on the user's machine.

A lookup's cost depends on its input width ``p`` and, at small widths, on the noise the linear
layer before it amplifies: the squared L2 norm of a neuron's integer weights (``2**nu``). Each
figure is the *marginal* cost of one more lookup in a circuit shaped like a Concrete ML layer
(a lookup feeding a multi-sum feeding a lookup, all of width ``p``), compiled exactly as Concrete
ML 1.9 compiles a model (``p_error`` 2**-40 per lookup, multi-parameter, compressed keys).
A width ``b`` rounded to ``r`` bits (Concrete ML's ``rounding_threshold_bits``, exact
``round_bit_pattern``) costs ``b - r`` small bootstraps more per lookup.
concrete-python is imported only here, only for those two commands.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import date
from typing import Any, Callable

import numpy as np

from fhe_lint.errors import FheLintError

P_ERROR = 2.0**-40  # Concrete ML's default per-lookup error probability
OPTIONS = {"p_error": P_ERROR, "single_precision": False,
           "compress_input_ciphertexts": True, "compress_evaluation_keys": True}
MAX_FAN_IN = 4096  # the widest multi-sum a table point compiles (time, not accuracy)


HINT = ('install the "concrete" extra: pip install "concrete-python>=2.5" (needs numpy < 2), '
        'or "./fhe-lint[concrete]" from a clone')


def fhe(needed_by: str = "calibrate-cost") -> Any:
    """concrete-python's ``fhe``, or the one-line error that says how to get it."""
    try:
        with warnings.catch_warnings():  # concrete's namespace package still imports pkg_resources
            warnings.simplefilter("ignore")
            from concrete import fhe as module
    except ImportError as e:
        raise FheLintError(f"{needed_by} needs concrete-python: {HINT}") from e
    return module


@contextlib.contextmanager
def scratch() -> Iterator[None]:
    """Concrete writes every circuit it compiles (its shared library, kilobytes to megabytes) to a
    new ``tempfile.mkdtemp()`` it never removes (``Server.cleanup`` is empty in concrete-python
    2.x): a test run left 30 such directories behind. Compiles inside this go to one directory of
    ours, removed on the way out, by pointing ``tempfile.tempdir`` there (so: one compiling thread
    per process, as fhe-lint runs files in processes). A circuit reads some figures (complexity,
    statistics) from those files when asked: ask inside."""
    with tempfile.TemporaryDirectory(prefix="fhe-lint-concrete-") as directory:
        kept, tempfile.tempdir = tempfile.tempdir, directory
        try:
            yield
        finally:
            tempfile.tempdir = kept


def concrete_version() -> str:
    from importlib.metadata import version

    return version("concrete-python")


def layer_shape(p: int, nu: int) -> tuple[int, int, int] | None:
    """(fan-in n, weight c, input top) whose sum reaches exactly ``p`` bits with norm2 ``n*c*c ==
    2**nu``; None when that needs more than MAX_FAN_IN inputs or cannot exist. A fan-in of one
    would let Concrete fuse the three ops into one lookup: at least two."""
    if not 1 <= nu <= 2 * p - 3:
        return None
    n, c, top = (2**nu, 1, 2 ** (p - 1 - nu)) if nu < p - 1 else (2 ** (2 * p - 2 - nu), 2 ** (nu - p + 1), 1)
    return (n, c, top) if n <= MAX_FAN_IN else None


def _lookup_circuit(p: int, nu: int, neurons: int, rounding: int | None = None, fresh: bool = False) -> Any:
    """``neurons`` multi-sums of ``p`` bits, each feeding a lookup, over the output of a lookup
    (or, ``fresh``, over the encrypted model input: its noise is far smaller). With ``rounding``
    the sums are rounded to that many bits first and the layer's input comes from a lookup of
    that width, as in a Concrete ML model compiled with ``rounding_threshold_bits``."""
    module = fhe()
    n, c, top = layer_shape(p, nu)
    weights = np.full((n, neurons), c, dtype=np.int64)
    dropped = 0 if rounding is None else p - rounding
    x_max = top if fresh else 2 ** (p - dropped) - 1

    def layer(x):
        z = (x if fresh else module.univariate(lambda v: v * top // x_max)(x)) @ weights
        if dropped:
            z = module.round_bit_pattern(z, lsbs_to_remove=dropped, overflow_protection=False)
        return module.univariate(lambda v: (v >> dropped) & 3)(z)  # a constant table would be folded away

    inputs = [np.zeros(n, dtype=np.int64), np.full(n, x_max, dtype=np.int64)]
    return module.Compiler(layer, {"x": "encrypted"}).compile(inputs, **OPTIONS), n


def _figures(circuit: Any) -> dict[str, Any]:
    stats = circuit.statistics
    def field(params: Any, name: str) -> int:  # a method in some concrete-python releases
        value = getattr(params, name)
        return int(value() if callable(value) else value)

    params = max(list(stats["programmable_bootstrap_count_per_parameter"].keys()),
                 key=lambda k: field(k, "polynomial_size"))
    return {"bootstrap_key_bytes": int(circuit.size_of_bootstrap_keys),
            "keyswitch_key_bytes": int(circuit.size_of_keyswitch_keys),
            **{key: field(params, name) for key, name in (("polynomial_size", "polynomial_size"),
               ("glwe_dimension", "glwe_dimension"), ("lwe_dimension", "input_lwe_dimension"), ("level", "level"))}}


def measure_lookup(p: int, nu: int, rounding: int | None = None, fresh: bool = False) -> dict[str, Any]:
    """One table point: the marginal complexity of a lookup (two circuits differing by one
    neuron) and the keys of the circuit (a single parameter set, or two with rounding)."""
    with scratch():
        one, _ = _lookup_circuit(p, nu, 1, rounding, fresh)
        figures, base = _figures(one), float(one.complexity)  # before the next compile, which can reset them
        two, _ = _lookup_circuit(p, nu, 2, rounding, fresh)
        complexity = float(two.complexity) - base  # read from the circuit's files
    point = {"bits": p, "norm2_bits": nu, "input": "model" if fresh else "lookup", "complexity": complexity, **figures}
    if rounding is not None:
        point["rounding_bits"] = rounding
    return point


def time_lookups(p: int, nu: int, neurons: int, runs: int = 3) -> tuple[float, float]:
    """(complexity, best wall seconds) of one encrypted run of a ``neurons``-wide layer at ``p`` bits."""
    with scratch():
        circuit, n = _lookup_circuit(p, nu, neurons)
        circuit.keygen()
        x = np.full(n, 2**p - 1, dtype=np.int64)
        best = float("inf")
        for _ in range(runs):
            start = time.perf_counter()
            circuit.decrypt(circuit.run(circuit.encrypt(x)))
            best = min(best, time.perf_counter() - start)
        return float(circuit.complexity), best


# Single-bootstrap widths whose keys take seconds to generate and whose lookups milliseconds to
# run, and the narrowest decomposed width (its lookups take seconds each, and Concrete gets through
# less of its complexity per second: about half as much here).
CALIBRATION = {"single": ((3, 8, 24), (4, 8, 24), (5, 8, 24)), "decomposed": ((11, 2, 4),)}


def calibrate(progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Seconds per unit of Concrete's complexity on this machine, for each kind of lookup: the
    slope between two encrypted layers of lookups (the fixed cost of a run left out; Concrete's
    parallel evaluation over the cores in, as in a model's layers)."""
    fhe()  # the missing extra is the first thing said
    out: dict[str, Any] = {"concrete_python": concrete_version(), "cores": os.cpu_count(),
                           "date": date.today().isoformat(), "points": []}
    for kind, widths in CALIBRATION.items():
        ratios = []
        for p, few, many in widths:
            if progress is not None:
                progress(f"timing {kind} lookups of {p} bits")
            (c1, s1), (c2, s2) = (time_lookups(p, 2 * p - 3, neurons, runs=2) for neurons in (few, many))
            out["points"].append({"bits": p, "kind": kind, "complexity": c2 - c1, "seconds": s2 - s1})
            ratios.append((s2 - s1) / (c2 - c1))
        out[f"seconds_per_complexity_{kind}"] = float(np.exp(np.mean(np.log(ratios))))
    return out
