"""Blocks of one array on every core: numpy's element-wise kernels, sorts and scans release the
GIL, so threads share a large layer without copying it (processes would)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_MAX_WORKERS = 8


def map_blocks(fn: Callable[[T], R], blocks: list[T]) -> list[R]:
    """``[fn(b) for b in blocks]``, in order, computed on up to every core."""
    workers = min(len(blocks), os.cpu_count() or 1, _MAX_WORKERS)
    if workers <= 1:
        return [fn(b) for b in blocks]
    from concurrent.futures import ThreadPoolExecutor  # only for arrays of several blocks

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, blocks))
