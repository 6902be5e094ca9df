"""Integer weights that reproduce a neuron's output on data while its exact bound fits.

For a neuron with real weights ``w`` over inputs ``X`` (and ``X'`` once earlier layers are
fixed), the output error of integer levels ``q`` at scale ``s`` is, up to a constant,
``E(q) = s^2 q^T H q - 2 s q^T c`` with ``H = X'^T X'`` and ``c = X'^T X w`` (OPTQ's
quadratic form). The exact worst case is a sum of per-tap costs, each linear in ``|q_i|`` on
either side of zero, so the bound is a budget: we minimise ``E(q) + mu * penalty(q)`` by exact
integer coordinate descent (each step solves its one-dimensional problem on the grid) and
bisect ``mu`` per neuron for the smallest penalty that fits, as accumulator-aware quantizers
(AXE, Colbert et al. 2025) trade error against an accumulator budget. A caller's feasible
``baseline`` (L1 pruning) competes per neuron, so the result is never worse on the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Problem:
    """One layer's rows to solve: all arrays per neuron (``n``) or per neuron and tap (``n, K``)."""

    H: np.ndarray  # (K, K) input second moments, damped
    c: np.ndarray  # (n, K) cross moments with the original output, damped alike
    scale: np.ndarray  # (n,) real value of one level
    x_lo: int  # the integers one tap reads
    x_hi: int
    low: np.ndarray  # (n,) the window the accumulator must stay in
    high: np.ndarray
    q_min: np.ndarray  # (n,) the weight grid, as levels
    q_max: np.ndarray
    limit: np.ndarray  # (n,) at most this many non-zeros (-1: no limit)

    def costs(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per tap, how far it pushes the accumulator's high end up and its low end down (>= 0)."""
        a, b = q * self.x_lo, q * self.x_hi
        return np.maximum(a, b), -np.minimum(a, b)

    def fits(self, q: np.ndarray) -> np.ndarray:
        up, down = self.costs(q.astype(np.int64))
        ok = (up.sum(axis=1) <= self.high) & (-down.sum(axis=1) >= self.low)
        return ok & ((self.limit < 0) | (np.count_nonzero(q, axis=1) <= self.limit))

    def error(self, q: np.ndarray) -> np.ndarray:
        s = self.scale
        return s * s * np.einsum("nk,nk->n", q @ self.H, q) - 2 * s * np.einsum("nk,nk->n", q, self.c)


def moments(x_new: np.ndarray, x_old: np.ndarray, w: np.ndarray, centred: bool,
            damping: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """``H`` and ``c`` of :class:`Problem` for real weights ``w`` (n, K), from centred inputs when
    a corrected bias absorbs the means. Damping pulls toward ``w`` where the data says nothing
    (a pixel that is always 0), instead of toward 0."""
    a, b = (x_new - x_new.mean(axis=0), x_old - x_old.mean(axis=0)) if centred else (x_new, x_old)
    H = a.T @ a / len(a)
    lam = damping * float(np.mean(np.diag(H))) + 1e-12
    H[np.diag_indices_from(H)] += lam
    c = w @ (b.T @ a / len(a)) + lam * w
    return H, c


def solve(p: Problem, start: np.ndarray, baseline: np.ndarray, steps: int = 14, sweeps: int = 4) -> np.ndarray:
    """Integer levels per row, fitting the bound, with the least error found (``baseline``, which
    must fit, if nothing better does)."""
    q = start.astype(np.float64)
    best, best_err = baseline.astype(np.float64), p.error(baseline.astype(np.float64))
    best_err[~p.fits(baseline)] = np.inf

    def keep(candidate: np.ndarray) -> np.ndarray:
        ok = p.fits(candidate)
        err = np.where(ok, p.error(candidate), np.inf)
        better = err < best_err
        best[better], best_err[better] = candidate[better], err[better]
        return ok

    up, down = p.costs(np.ones(p.c.shape[1], dtype=np.int64))
    budget_up = np.maximum(p.high, 0).astype(np.float64)[:, None]
    budget_down = np.maximum(-np.asarray(p.low), 0).astype(np.float64)[:, None]
    with np.errstate(divide="ignore"):
        # penalty slope of one level on each side, relative to each end's budget
        pos = np.where(up > 0, up / budget_up, 0) + np.where(down > 0, down / budget_down, 0)
        neg_up, neg_down = p.costs(-np.ones(p.c.shape[1], dtype=np.int64))
        neg = np.where(neg_up > 0, neg_up / budget_up, 0) + np.where(neg_down > 0, neg_down / budget_down, 0)
    pos, neg = np.minimum(pos, 1e300), np.minimum(neg, 1e300)
    if keep(_descend(p, q, np.zeros(len(q)), pos, neg, sweeps)).all():
        return best.astype(np.int64)
    # mu at which zero is every tap's optimum: an upper end that surely fits
    top = 2 * np.abs(p.scale[:, None] * p.c).max(axis=1) / np.maximum(np.minimum(pos, neg).min(axis=1), 1e-300)
    lo, hi = np.log(np.maximum(top, 1e-300) * 1e-6), np.log(np.maximum(top, 1e-300) * 2)
    for _ in range(steps):
        mid = (lo + hi) / 2
        q = _descend(p, q, np.exp(mid), pos, neg, sweeps)
        ok = keep(q)
        hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
    return best.astype(np.int64)


def _descend(p: Problem, q: np.ndarray, mu: np.ndarray, pos: np.ndarray, neg: np.ndarray, sweeps: int) -> np.ndarray:
    """Exact coordinate descent on ``E(q) + mu * (pos . q+ + neg . q-)`` over the integer grid."""
    q = np.clip(q, p.q_min[:, None], p.q_max[:, None])
    s, H = p.scale, p.H
    g = q @ H
    diag = np.diag(H)
    for _ in range(sweeps):
        moved = False
        for i in range(q.shape[1]):
            a = s * s * diag[i]
            b = s * p.c[:, i] - s * s * (g[:, i] - diag[i] * q[:, i])
            t_pos, t_neg = (2 * b - mu * pos[:, i]) / (2 * a), (2 * b + mu * neg[:, i]) / (2 * a)
            t = np.where(t_pos > 0, t_pos, np.where(t_neg < 0, t_neg, 0.0))
            lo_t = np.clip(np.floor(t), p.q_min, p.q_max)
            hi_t = np.clip(lo_t + 1, p.q_min, p.q_max)

            def f(v: np.ndarray) -> np.ndarray:
                return a * v * v - 2 * b * v + mu * (pos[:, i] * np.maximum(v, 0) + neg[:, i] * np.maximum(-v, 0))

            new = np.where(f(hi_t) < f(lo_t), hi_t, lo_t)
            delta = new - q[:, i]
            if delta.any():
                moved = True
                g += delta[:, None] * H[i][None, :]
                q[:, i] = new
        if not moved:
            break
    return q
