"""Per-sample label noise for comparing selection methods (``params.protocol``), in model-class space.

A ``label_noise`` fraction of the training sub-patches has every parcel pixel relabelled with a
wrong model class: the crop classes ``1..C-1`` are shifted cyclically by a per-sample step in
``1..C-2``, so every labelled pixel of a noisy sample is wrong, parcels stay uniform and
background (0, ignored by the loss) stays background. This is the per-sample noise of the
RHO-Loss paper's noisy-label benchmarks (Mindermann et al., 2022, sec. 4: a whole training point
gets a wrong label), applied after the label set's mapping so that every noisy pixel is visible to
the loss (noise drawn in S4A-code space partly lands on codes a label set maps to background).

The draw depends only on ``(noise_seed, patch path, sub-patch position)`` through an integer hash,
never on the split list, the order or ``train.seed``: every method and seed trains on the same
noisy dataset, the irreducible-loss stage scores the same labels the target model trains on, and
flags for millions of samples are computed vectorised at start (no per-sample RNG objects).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective 64-bit mix, so nearby keys give independent-looking bits."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (x ^ (x >> np.uint64(31))) & _MASK


def sample_keys(paths: Sequence[str], per_patch: int) -> np.ndarray:
    """One 64-bit key per sub-patch (patch path, position in the patch), in global-index order."""
    path_hash = np.array([zlib.crc32(p.encode()) for p in paths], dtype=np.uint64)
    return (path_hash[:, None] << np.uint64(32) | np.arange(per_patch, dtype=np.uint64)[None, :]).ravel()


@dataclass(frozen=True)
class LabelNoise:
    """Which samples are noisy and by how much their classes are shifted."""

    fraction: float
    seed: int
    n_classes: int

    def __post_init__(self) -> None:
        if self.fraction > 0 and self.n_classes < 3:
            raise ValueError(f"protocol.label_noise needs at least 2 crop classes to relabel a sample with a wrong "
                             f"one; the label set has {self.n_classes - 1}")

    def shifts(self, keys: np.ndarray) -> np.ndarray:
        """Cyclic class shift of every sample (0: clean, ``1..C-2``: noisy), from its key."""
        with np.errstate(over="ignore"):
            seeded = np.asarray(keys, dtype=np.uint64) + np.uint64(self.seed) * np.uint64(0x9E3779B97F4A7C15)
        first = _mix64(seeded)
        second = _mix64(first ^ np.uint64(0xD1B54A32D192ED03))
        noisy = (first >> np.uint64(11)).astype(np.float64) / float(1 << 53) < self.fraction
        crop_classes = self.n_classes - 1
        step = 1 + (second % np.uint64(max(crop_classes - 1, 1))).astype(np.int64)
        return np.where(noisy, step, 0)


def relabel(classes: np.ndarray, shift: np.ndarray | int, n_classes: int) -> np.ndarray:
    """Shift crop classes ``1..C-1`` cyclically by ``shift`` (broadcast); background 0 stays 0."""
    classes = np.asarray(classes)
    crop = classes > 0
    shifted = (classes - 1 + shift) % (n_classes - 1) + 1
    return np.where(crop, shifted, classes).astype(classes.dtype, copy=False)
