"""Configuration: ``fhe-lint.toml`` or ``[tool.fhe-lint]`` in ``pyproject.toml``, the nearest one
up from each model (like ruff), then command-line flags on top; and suppressions written into a
model itself (``metadata_props`` key ``fhe-lint:ignore``).

    # fhe-lint.toml (or [tool.fhe-lint] in pyproject.toml)
    n-max = 16
    multiplier = 2.0
    strict = false
    select = ["FHE001", "FHE005"]
    ignore = ["FHE004"]
    max-prune = 90            # percent
    weight-bits = 8           # float models
    input-bits = 8
    per-node-ignores = { "/classifier/*" = ["ALL"], "/fc/Gemm" = ["FHE002"] }
    calibration = "data/calib.npy"   # model inputs, relative to this file: --fix measures and compensates
    fix-strategy = "auto"     # prune | compensate | bits | auto
    max-damage = 5            # percent of a layer's weight energy a fix without data may change
    rounding-bits = 6         # Concrete ML's rounding_threshold_bits: the lookups' width cap

    [per-file."legacy/*.onnx"]   # any key above, for the models matching the glob
    n-max = 17
"""

from __future__ import annotations

import dataclasses
import fnmatch
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhe_lint.errors import FheLintError
from fhe_lint.settings import FIX_STRATEGIES, NodeIgnores, Settings

if TYPE_CHECKING:
    import onnx

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

METADATA_KEY = "fhe-lint:ignore"


class ConfigError(FheLintError):
    """A configuration file or an in-model suppression is malformed."""


def parse_codes(value: Any) -> frozenset[str]:
    """Rule codes from a string or list of comma-separated strings, as ruff reads them: a full
    code, a prefix (``FHE00`` is FHE001-FHE009) or ``ALL``, expanded against the registry; a
    prefix that names no rule is an error, not an empty selection."""
    from fhe_lint.rules import RULES

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(c, str) for c in items):
        raise ValueError("expected a list of rule codes")
    codes: set[str] = set()
    for token in (c.strip().upper() for item in items for c in item.split(",")):
        if not token:
            continue
        matched = set(RULES) if token == "ALL" else {code for code in RULES if code.startswith(token)}
        if not matched:
            raise ValueError(f"unknown rule code or prefix {token} (known: ALL, {', '.join(RULES)})")
        codes |= matched
    return frozenset(codes)


def _positive_int(low: int, high: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            raise ValueError(f"expected an integer in {low}..{high}")
        return v
    return check


def _number(low: float, high: float, open_low: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (low < v if open_low else low <= v) or v > high:
            raise ValueError(f"expected a number in {'(' if open_low else '['}{low}, {high}]")
        return float(v)
    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return v
    return check


def _path(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("expected a path")
    return v


def _globs(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(g, str) and g for g in v):
        raise ValueError('expected a list of path globs, e.g. ["legacy/*", "*.float.onnx"]')
    return tuple(v)


def _node_ignores(v: Any) -> tuple[tuple[str, frozenset[str]], ...]:
    if not isinstance(v, dict):
        raise ValueError('expected a table of node-name glob = ["CODE", ...]')
    return tuple((str(glob), parse_codes(codes)) for glob, codes in v.items())


# config key -> (Settings field, validator and converter)
KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "n-max": ("n_max", _positive_int(1, 64)),
    "multiplier": ("multiplier", _number(0, float("inf"), open_low=True)),
    "strict": ("strict", _bool),
    "select": ("select", parse_codes),
    "ignore": ("ignore", parse_codes),
    "extend-select": ("extend_select", parse_codes),
    "extend-ignore": ("extend_ignore", parse_codes),
    "model-suppressions": ("model_suppressions", _bool),
    "exclude": ("exclude", _globs),
    "max-prune": ("max_prune", _number(0, 100)),
    "weight-bits": ("weight_bits", _positive_int(1, 32)),
    "input-bits": ("input_bits", _positive_int(1, 32)),
    "per-node-ignores": ("node_ignores", _node_ignores),
    "fix-strategy": ("fix_strategy", _choice(*FIX_STRATEGIES)),
    "max-damage": ("max_damage", _number(0, 100)),
    "rounding-bits": ("rounding_bits", _positive_int(2, 8)),  # Concrete ML's accepted range
    "max-lookup-bits": ("max_lookup_bits", _positive_int(1, 32)),
    "calibration": ("calibration", _path),  # relative to the config file: made absolute in _apply
}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read configuration: {e}") from e
    if path.name == "pyproject.toml":
        return data.get("tool", {}).get("fhe-lint")
    return data


def find_config(model: Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest ``fhe-lint.toml``, or ``pyproject.toml`` with ``[tool.fhe-lint]``, up from ``model``."""
    for directory in [model.resolve().parent, *model.resolve().parent.parents]:
        for name in ("fhe-lint.toml", "pyproject.toml"):
            candidate = directory / name
            if candidate.is_file():
                table = _read(candidate)
                if table is not None:
                    return candidate, table
    return None


def load_config(path: Path) -> tuple[Path, dict[str, Any]]:
    """A configuration named on the command line (``--config``): it must exist and hold a table."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    table = _read(path)
    if table is None:
        raise ConfigError(f"{path}: no [tool.fhe-lint] table")
    return path.resolve(), table


def _apply(settings: Settings, table: dict[str, Any], where: Path) -> Settings:
    changes = {}
    for key, value in table.items():
        if key == "per-file":
            continue
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(KEYS)}, per-file)")
        name, convert = KEYS[key]
        try:
            changes[name] = convert(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {key}: {e}") from e
    if "calibration" in changes:
        changes["calibration"] = str(where.parent / changes["calibration"])
    return dataclasses.replace(settings, **changes)


def resolve(model: Path, cli: dict[str, Any], config: tuple[Path, dict[str, Any]] | None = None) -> Settings:
    """Defaults < the configuration (``config``, else the nearest one) < its ``per-file`` tables <
    command-line flags."""
    settings = Settings()
    found = config or find_config(model)
    if found is not None:
        path, table = found
        settings = dataclasses.replace(_apply(settings, table, path), source=str(path))
        per_file = table.get("per-file", {})
        if not isinstance(per_file, dict):
            raise ConfigError(f"{path}: per-file must be a table of glob = {{settings}}")
        relative = relative_to(model, path.parent)
        for glob, sub in per_file.items():
            if fnmatch.fnmatch(relative, glob):
                if not isinstance(sub, dict):
                    raise ConfigError(f"{path}: per-file.{glob!r} must be a table")
                settings = _apply(settings, sub, path)
    return dataclasses.replace(settings, **cli)


def relative_to(path: Path, root: Path) -> str:
    """``path`` as a config's globs see it: relative to the config's directory (absolute when a
    ``--config`` lives elsewhere)."""
    resolved = path.resolve()
    return resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else resolved.as_posix()


def model_suppressions(model: onnx.ModelProto) -> NodeIgnores:
    """The model's own ``fhe-lint:ignore`` entries: ``CODES [NODE_GLOB]`` separated by ``;``
    or new lines, e.g. ``FHE002; FHE001 /classifier/*``."""
    extra = []
    for prop in model.metadata_props:
        if prop.key != METADATA_KEY:
            continue
        for entry in prop.value.replace("\n", ";").split(";"):
            parts = entry.split()
            if not parts:
                continue
            if len(parts) > 2:
                raise ConfigError(f"model metadata {METADATA_KEY!r}: cannot parse {entry.strip()!r} "
                                  "(expected 'CODES [NODE_GLOB]')")
            try:
                extra.append((parts[1] if len(parts) == 2 else "*", parse_codes(parts[0])))
            except ValueError as e:
                raise ConfigError(f"model metadata {METADATA_KEY!r}: {e}") from e
    return tuple(extra)
