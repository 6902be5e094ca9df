"""Resolved options for one lint run; the CLI builds it, everything else only reads it."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


FIX_STRATEGIES = ("prune", "compensate", "bits", "auto")


@dataclass(frozen=True)
class Settings:
    n_max: int = 16
    multiplier: float = 1.0
    strict: bool = False
    select: frozenset[str] = field(default_factory=frozenset)
    ignore: frozenset[str] = field(default_factory=frozenset)
    max_prune: float = 0.9
    weight_bits: int | None = None  # float models: assume Concrete ML's post-training quantization
    input_bits: int | None = None
    node_ignores: tuple[tuple[str, frozenset[str]], ...] = ()  # (node-name glob, codes or {"ALL"})
    calibration: str | None = None  # .npy/.npz of model inputs: observed ranges, fix impact
    fix_strategy: str | None = None  # prune | compensate | bits | auto; None: auto with data, else prune
    max_damage: float = 5.0  # percent of a layer's weight energy a fix may change without data
    fix_order: str = "l1"  # l1: smallest |w| first; activation: smallest |w| * mean|x| first
    max_agreement_drop: float | None = None  # percent of changed predictions a fix may cause
    confirm: str | None = None  # "layers": Concrete compiles each multi-sum; "network": Concrete ML the model
    source: str | None = None  # the config file these settings came from, if any

    def ignored(self, code: str, node: str | None) -> bool:
        """Whether a per-node ignore (config or model metadata) suppresses ``code`` at ``node``."""
        return any(
            fnmatch.fnmatchcase(node or "", glob) and (code in codes or "ALL" in codes)
            for glob, codes in self.node_ignores
        )

    def enabled(self, code: str) -> bool:
        """ruff semantics: an empty ``select`` means every rule; ``ignore`` wins over ``select``."""
        return (not self.select or code in self.select) and code not in self.ignore
