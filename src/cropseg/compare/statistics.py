"""The statistics of a selection-method comparison: paired intervals, exact p-values, Holm, speed-ups.

The unit is the **replicate** (:mod:`experiments.grid`): another synthetic data draw, noise draw,
split, holdout model and initialisation. Two methods are compared on the differences of their
runs of the same replicate:

* **Interval**: the mean difference and its 95 % Student-t interval (``scipy.stats.t``). Chosen over
  a bootstrap because with 5-8 pairs a percentile bootstrap has few distinct resamples and covers
  less than it claims (5 pairs: 126 resamples, ~85 % coverage); BCa needs more pairs still.
* **p-value**: the exact sign-flip permutation test of the mean difference
  (``scipy.stats.permutation_test``, ``permutation_type="samples"``, every one of the ``2^n``
  sign patterns). Assumes only that the two methods are exchangeable within a replicate. With
  ``n`` pairs the smallest two-sided p is ``2 / 2^n``: 0.0625 for 5 pairs (never below 0.05),
  0.0078 for 8.
* **Holm**: the step-down correction of the p-values of one regime's family of comparisons.
* **Speed-up** (Mindermann et al., 2022, sec. 5: the cost to reach a target accuracy, relative to
  uniform): the target is the reference's final replicate-mean F1; the cost of a run to reach it
  is the samples seen where its replicate-mean curve first reaches it (linear interpolation)
  times the run's cost per sample seen in the unit (1 for samples seen; forward passes or
  seconds per sample seen otherwise), plus a fixed cost (the irreducible-loss model's) where
  asked. A curve that never reaches the target has speed-up 0 (it needs more than the budget).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Paired:
    """A paired comparison: mean difference, its 95 % t interval, exact sign-flip p, pairs."""

    mean: float
    low: float
    high: float
    p: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired(method: np.ndarray, reference: np.ndarray) -> Paired:
    """``method - reference`` per replicate: mean, 95 % t interval and exact two-sided sign-flip p."""
    diff = np.asarray(method, np.float64) - np.asarray(reference, np.float64)
    n = len(diff)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(diff.mean())
    if n < 2 or np.allclose(diff, diff[0]):
        return Paired(mean, mean, mean, 1.0 if mean == 0 else 2.0 / 2 ** n, n)
    half = float(stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    return Paired(mean, mean - half, mean + half, sign_flip_p(diff), n)


def sign_flip_p(diff: np.ndarray) -> float:
    """Exact two-sided p of the mean of ``diff`` under random signs (every pattern enumerated)."""
    diff = np.asarray(diff, np.float64)
    if len(diff) <= 16:  # scipy enumerates exactly too; a direct enumeration is clearer and as fast here
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(diff))))
        means = (signs * diff).mean(axis=1)
        return float(np.mean(np.abs(means) >= abs(diff.mean()) - 1e-12))
    result = stats.permutation_test((diff,), np.mean, permutation_type="samples", alternative="two-sided",
                                    n_resamples=np.inf)
    return float(result.pvalue)


def smallest_p(n_pairs: int) -> float:
    """The smallest two-sided p the exact sign-flip test can give on ``n_pairs`` pairs (all signs alike)."""
    return 1.0 if n_pairs < 1 else min(1.0, 2.0 / 2 ** n_pairs)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    order = [i for i in np.argsort(p_values) if not math.isnan(p_values[i])]
    adjusted = [math.nan] * len(p_values)
    running, m = 0.0, len(order)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def first_reach(seen: np.ndarray, f1: np.ndarray, target: float) -> float:
    """Samples seen when ``f1`` first reaches ``target``, linearly interpolated; inf if never."""
    seen, f1 = np.asarray(seen, dtype=np.float64), np.asarray(f1, dtype=np.float64)
    above = np.flatnonzero(f1 >= target)
    if not len(above):
        return float("inf")
    i = int(above[0])
    if i == 0:
        return float(seen[0])
    x0, x1, y0, y1 = seen[i - 1], seen[i], f1[i - 1], f1[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def speedup(grid: np.ndarray, reference: np.ndarray, method: np.ndarray, *, reference_rate: float = 1.0,
            method_rate: float = 1.0, method_fixed: float = 0.0) -> float:
    """Speed-up of ``method`` over ``reference`` (replicate-mean curves on ``grid``) in one cost unit.

    ``*_rate``: cost per sample seen; ``method_fixed``: a cost paid before training (the IL model)."""
    target = float(reference[-1])
    reach = first_reach(grid, method, target)
    if not np.isfinite(reach):
        return 0.0
    return float(first_reach(grid, reference, target) * reference_rate / (reach * method_rate + method_fixed))


def on_grid(seen: np.ndarray, f1: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A curve resampled on the common ``grid`` (runs reach each point within one batch of it)."""
    return np.interp(grid, np.asarray(seen, dtype=np.float64), np.asarray(f1, dtype=np.float64))
