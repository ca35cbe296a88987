"""The statistics of a selection-method comparison: speed-up, curves on a common grid, paired bootstrap.

Pure numpy on learning curves (test weighted F1 against samples seen, one per seed), used by
:mod:`cropseg.compare.results` for ``experiments/report.py`` (the grid). Definitions:

* **AUC**: :func:`cropseg.evaluate.curve_area.auc`, the evaluate stage's own definition, so
  that the comparison and ``dvc exp show`` report the same number.
* **Speed-up** (as Mindermann et al., 2022, compute it, sec. 5: "epochs needed to reach a
  target accuracy" relative to uniform): the target is uniform's final seed-mean F1; for uniform
  and for the method, the samples seen until the *seed-mean* curve first reaches it (linear
  interpolation between points); speed-up = uniform's / the method's. A method whose mean curve
  never reaches the target gets 0 (a lower bound: it needs more than the whole budget).
* **Paired bootstrap**: the unit is the seed (same data, noise, initialisation and sample order
  for every method at a seed). Each replicate resamples seeds with replacement and recomputes the
  statistic on the resampled seeds of both methods; the 95 % interval is the 2.5-97.5 percentile
  range (Efron & Tibshirani, 1993, ch. 13). A difference counts only where it excludes 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


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


def speedup(uniform: np.ndarray, method: np.ndarray, grid: np.ndarray) -> float:
    """Speed-up of ``method`` over ``uniform``: curves ``(seeds, points)`` on the samples-seen ``grid``."""
    uniform_mean, method_mean = uniform.mean(0), method.mean(0)
    target = float(uniform_mean[-1])
    reach = first_reach(grid, method_mean, target)
    return float(first_reach(grid, uniform_mean, target) / reach) if np.isfinite(reach) else 0.0


def on_grid(seen: np.ndarray, f1: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """A curve resampled on the common ``grid`` (runs reach each point within one batch of it)."""
    return np.interp(grid, np.asarray(seen, dtype=np.float64), np.asarray(f1, dtype=np.float64))


@dataclass(frozen=True)
class Interval:
    """A statistic and its paired-bootstrap 95 % interval."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def excludes(self, reference: float) -> bool:
        return bool(self.low > reference or self.high < reference)

    def text(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def paired_bootstrap(statistic: Callable[[np.ndarray], float], n_seeds: int, *, replicates: int = 10_000,
                     seed: int = 0) -> Interval:
    """``statistic(seed_indices)`` on all seeds, with the percentile interval over resampled seeds.

    ``statistic`` receives an index array into the paired seeds (the same resample for every
    method it compares), so differences, ratios and curve statistics are all paired."""
    rng = np.random.default_rng(seed)
    everyone = np.arange(n_seeds)
    draws = rng.integers(0, n_seeds, size=(replicates, n_seeds))
    values = np.array([statistic(d) for d in draws], dtype=np.float64)
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(float(statistic(everyone)), float(low), float(high))
