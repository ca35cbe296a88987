"""The seam measurement: do predicted classes change more often across the sub-patch grid than elsewhere?

For every pair of 4-neighbour pixels of a class map, the pair *disagrees* when the two classes
differ. A pair straddling a grid line (between pixel ``k * window - 1`` and ``k * window``, in rows
or columns) is an *edge* pair; every other pair is an *inside* pair. Parcel boundaries fall on the
grid no more often than anywhere else, so without seams the two disagreement rates are equal
within noise; a stitched map of independently predicted windows disagrees more on the grid.

Each boundary position (one row or column boundary, summed over the patches) is one unit; the
interval of ``edge - inside`` is a percentile bootstrap over units, each group resampled on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeamScore:
    """Disagreement rates of edge and inside pairs, their difference with a 95 % interval."""

    edge_rate: float
    inside_rate: float
    difference: float
    low: float
    high: float
    edge_pairs: int
    inside_pairs: int

    def as_dict(self) -> dict[str, float | int]:
        return {"edge_disagreement": self.edge_rate, "inside_disagreement": self.inside_rate,
                "difference": self.difference, "difference_low": self.low, "difference_high": self.high,
                "edge_pairs": self.edge_pairs, "inside_pairs": self.inside_pairs}


class SeamAccumulator:
    """Disagreements and pairs per boundary position (rows and columns), summed over patches of one
    size: memory does not grow with the number of patches. A unit of the bootstrap is one boundary
    position (e.g. between columns 60 and 61) summed over all patches."""

    def __init__(self, window: int):
        self.window = window
        self.disagree: np.ndarray | None = None
        self.pairs: np.ndarray | None = None
        self.on_grid: np.ndarray | None = None

    def add(self, classes: np.ndarray, groups: np.ndarray | None = None) -> None:
        """Count one ``(H, W)`` class map; with ``groups`` (e.g. parcel ids), only pairs whose two
        pixels share a group id > 0 (inside one parcel the truth has no edge at all)."""
        if classes.shape[0] != classes.shape[1]:
            raise ValueError(f"seams are measured on square patches, got {classes.shape}")
        rows, cols = [], []
        for a, g in ((classes, groups), (classes.T, None if groups is None else groups.T)):
            diff = a[1:] != a[:-1]
            valid = np.ones_like(diff) if g is None else ((g[1:] == g[:-1]) & (g[1:] > 0))
            rows.append((diff & valid).sum(1))
            cols.append(valid.sum(1))
        d, n = np.stack(rows).astype(np.int64), np.stack(cols).astype(np.int64)
        if self.disagree is None:
            self.disagree, self.pairs = d, n
            self.on_grid = (np.arange(1, classes.shape[0]) % self.window) == 0
        elif d.shape != self.disagree.shape:
            raise ValueError(f"patches of different sizes: {classes.shape} after {self.disagree.shape[1] + 1} px")
        else:
            self.disagree += d
            self.pairs += n

    def measurable(self) -> bool:
        """Whether pairs were counted both on and off the grid: not so for patches of one window (no grid
        line inside) or when no group straddles a grid line."""
        if self.pairs is None or self.on_grid is None:
            return False
        grid = np.broadcast_to(self.on_grid, self.pairs.shape)
        return bool(self.pairs[grid].sum() > 0 and self.pairs[~grid].sum() > 0)

    def score(self, *, seed: int = 0, resamples: int = 2000) -> SeamScore:
        """Edge vs inside disagreement and a percentile-bootstrap 95 % interval of the difference.

        Raises:
            ValueError: nothing was added, or no pairs lie on or off the grid.
        """
        if self.disagree is None or self.pairs is None or self.on_grid is None:
            raise ValueError("no class maps to measure seams on")
        grid = np.broadcast_to(self.on_grid, self.pairs.shape)
        ed, en = self.disagree[grid].astype(float), self.pairs[grid].astype(float)
        idis, inn = self.disagree[~grid].astype(float), self.pairs[~grid].astype(float)
        ed, en, idis, inn = ed[en > 0], en[en > 0], idis[inn > 0], inn[inn > 0]
        if not len(en) or not len(inn):
            raise ValueError("no pixel pairs on or off the sub-patch grid")
        edge, inside = ed.sum() / en.sum(), idis.sum() / inn.sum()
        rng = np.random.default_rng(seed)
        e = rng.integers(0, len(en), (resamples, len(en)))
        i = rng.integers(0, len(inn), (resamples, len(inn)))
        boot = ed[e].sum(1) / en[e].sum(1) - idis[i].sum(1) / inn[i].sum(1)
        low, high = np.percentile(boot, [2.5, 97.5])
        return SeamScore(float(edge), float(inside), float(edge - inside), float(low), float(high), int(en.sum()),
                         int(inn.sum()))
