"""Resolved options for one lint run; the CLI builds it, everything else only reads it."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


FIX_STRATEGIES = ("prune", "compensate", "bits", "auto")


NodeIgnores = tuple[tuple[str, frozenset[str]], ...]  # (node-name glob, rule codes)


def suppresses(ignores: NodeIgnores, code: str, node: str | None) -> bool:
    return any(fnmatch.fnmatchcase(node or "", glob) and code in codes for glob, codes in ignores)


@dataclass(frozen=True)
class Settings:
    n_max: int = 16
    multiplier: float = 1.0
    strict: bool = False
    select: frozenset[str] = field(default_factory=frozenset)
    ignore: frozenset[str] = field(default_factory=frozenset)
    extend_select: frozenset[str] = field(default_factory=frozenset)  # added to select (a config's, say)
    extend_ignore: frozenset[str] = field(default_factory=frozenset)  # added to ignore
    max_prune: float = 90.0  # percent of a layer's weights a fix may prune
    weight_bits: int | None = None  # float models: assume Concrete ML's post-training quantization
    input_bits: int | None = None
    node_ignores: NodeIgnores = ()
    calibration: str | None = None  # .npy/.npz of model inputs: observed ranges, fix impact
    fix_strategy: str | None = None  # prune | compensate | bits | auto; None: auto with data, else prune
    max_damage: float = 5.0  # percent of a layer's weight energy a fix may change without data
    fix_order: str = "l1"  # l1: smallest |w| first; activation: smallest |w| * mean|x| first
    max_agreement_drop: float | None = None  # percent of changed predictions a fix may cause
    model_suppressions: bool = True  # honour the model's own fhe-lint:ignore metadata (CI may refuse it)
    exclude: tuple[str, ...] = ()  # path globs a directory walk skips
    rounding_bits: int | None = None  # Concrete ML's rounding_threshold_bits: the lookups' width cap
    max_lookup_bits: int | None = None  # FHE007's budget for a lookup's width (None: the rule is off)
    confirm: str | None = None  # "layers": Concrete compiles each multi-sum; "network": Concrete ML the model
    source: str | None = None  # the config file these settings came from, if any

    def ignored(self, code: str, node: str | None) -> bool:
        """Whether a per-node ignore of the configuration suppresses ``code`` at ``node``."""
        return suppresses(self.node_ignores, code, node)

    def enabled(self, code: str) -> bool:
        """ruff semantics: an empty ``select`` means every rule; ``ignore`` wins over ``select``;
        ``--select`` replaces a configuration's list where ``--extend-select`` adds to it."""
        selected = not self.select or code in self.select or code in self.extend_select
        return selected and code not in self.ignore and code not in self.extend_ignore
