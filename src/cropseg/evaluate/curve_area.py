"""The area under a learning curve: the evaluate stage's ``auc_weighted_f1`` and the comparison's AUC.

Kept apart, with numpy only, so that the evaluate stage (which computes it for one run) and
:mod:`cropseg.compare` (which computes it per seed of a grid) share one definition, and so that a
change to the comparison's bootstrap statistics does not rerun the evaluate stage.

**AUC**: trapezoidal area under F1 vs samples seen, divided by the samples-seen span: the mean F1
over training, in F1 units, comparable across runs of the same budget.
"""

from __future__ import annotations

import numpy as np


def auc(seen: np.ndarray, f1: np.ndarray) -> float:
    """Mean F1 over the samples-seen span (trapezoidal area / span); one point: that F1.

    Args:
        seen: samples seen at each point, increasing.
        f1: the score at each point.

    Returns:
        The area divided by the span; NaN for an empty curve.
    """
    seen, f1 = np.asarray(seen, dtype=np.float64), np.asarray(f1, dtype=np.float64)
    if len(seen) == 0:
        return float("nan")
    if len(seen) == 1 or seen[-1] == seen[0]:
        return float(f1[-1])
    return float(np.sum((f1[1:] + f1[:-1]) * np.diff(seen)) / 2.0 / (seen[-1] - seen[0]))
