"""Sub-patches <-> full patches: the medians stage cuts each patch into windows, these put them back.

The evaluate stage stitches its predictions and the clean truth, the predict stage its maps and
the figures their RGB composites, so the cutting order is defined once, here.
"""

from __future__ import annotations

import numpy as np
import torch


def cut(full: np.ndarray, window: int) -> np.ndarray:
    """``(..., size, size)`` -> ``(sub_y, sub_x, ..., window, window)``, as the medians stage cuts labels.

    Raises:
        ValueError: ``window`` does not divide the last two dimensions.
    """
    full = np.asarray(full)
    *lead, h, w = full.shape
    if h % window or w % window:
        raise ValueError(f"a {h}x{w} patch is not a whole number of {window}-pixel windows")
    shaped = full.reshape(*lead, h // window, window, w // window, window)
    k = len(lead)
    order = (k, k + 2, *range(k), k + 1, k + 3)
    return np.ascontiguousarray(shaped.transpose(order))


def stitch(windows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`cut`: ``(sub_y, sub_x, ..., h, w)`` -> ``(..., sub_y * h, sub_x * w)``."""
    windows = np.asarray(windows)
    sub_y, sub_x, *lead, h, w = windows.shape
    k = len(lead)
    order = (*range(2, 2 + k), 0, 2 + k, 1, 3 + k)
    return windows.transpose(order).reshape(*lead, sub_y * h, sub_x * w)


class PatchCanvas:
    """Full-patch maps of a few patches of a split, filled from batches of sub-patches.

    ``add(index, values)`` puts each sample's ``(h, w)`` map where its sub-patch lies in its patch
    (sample ``i`` = patch ``i // per_patch``, sub-patch ``divmod(i % per_patch, sub_x)``); samples
    of other patches are skipped. ``full(p)`` is the stitched map of patch position ``p``
    (``fill`` where no sub-patch came).
    """

    def __init__(self, patches: list[int], per_patch: int, sub_x: int, window: int, dtype=np.int64, fill=-1):
        """Empty maps for ``patches``.

        Args:
            patches: positions of the patches to keep (in the split's patch order).
            per_patch: sub-patches per patch.
            sub_x: sub-patches per row of a patch.
            window: sub-patch side in pixels.
            dtype: the maps' dtype.
            fill: the value where no sub-patch came.
        """
        self.per_patch, self.sub_x = per_patch, sub_x
        sub_y = per_patch // sub_x if sub_x else 0
        self.maps = {p: np.full((sub_y, sub_x, window, window), fill, dtype=dtype) for p in patches}

    def add(self, index: np.ndarray | torch.Tensor, values: np.ndarray | torch.Tensor) -> None:
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        patch, within = np.divmod(index, self.per_patch)
        wanted = np.flatnonzero(np.isin(patch, list(self.maps)))
        if not len(wanted):
            return
        values = values[torch.as_tensor(wanted)] if isinstance(values, torch.Tensor) else np.asarray(values)[wanted]
        values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
        sub_y, sub_x = np.divmod(within[wanted], self.sub_x)
        for row, (p, y, x) in enumerate(zip(patch[wanted], sub_y, sub_x)):
            self.maps[int(p)][y, x] = values[row]

    def full(self, patch: int) -> np.ndarray:
        return stitch(self.maps[patch])

