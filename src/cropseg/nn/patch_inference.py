"""Seamless inference: a model over whole patches, shared by the evaluate and predict stages.

Predicting each 61 x 61 sub-patch on its own and stitching them leaves straight class edges on
the sub-patch grid (a pixel at a window edge sees zero padding where its neighbour sees the next
window). Both models are fully convolutional (the U-Net pads to a multiple of ``2**depth`` and
crops back, ConvSTAR has no down-sampling), so the whole patch goes through the model at once:
no window edge exists inside the patch. :func:`tiled_log_probs` keeps the window-by-window way
(stride = window: the old stitched maps; stride < window: overlapping windows blended), for the
measurement in ``bench/seams.py`` and ``docs/decisions.md`` that chose whole-patch inference.

One code path, :func:`iter_patches`, gives the evaluate stage the maps it scores and the predict
stage the maps it writes, so the metrics describe the GeoTIFFs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..medians.subpatches import stitch
from .dataset import SubPatchDataset
from .precision import Precision


@dataclass(frozen=True)
class PatchMaps:
    """One patch's inference: position in the split list, labels (H, W) and log-probabilities (C, H, W)."""

    position: int
    labels: torch.Tensor
    log_probs: torch.Tensor


class WholePatches(Dataset):
    """The patches of a :class:`SubPatchDataset` as whole ``(T, B, H, W)`` inputs with their
    ``(H, W)`` model-class labels (months, normalisation, label set: the dataset's own)."""

    def __init__(self, dataset: SubPatchDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset.records)

    def __getitem__(self, p: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        data = self.dataset
        medians, raw = data.store.arrays(int(data.records.rows[p]))
        x = stitch(np.asarray(medians[:, :, data.periods], dtype=np.float32)) * np.float32(1.0 / data.normalize)
        y = data.label_set.map(stitch(np.asarray(raw))).astype(np.int64)
        return p, torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


@torch.no_grad()
def tiled_log_probs(model: torch.nn.Module, x: torch.Tensor, window: int, stride: int,
                    precision: Precision) -> torch.Tensor:
    """Log-probabilities ``(C, H, W)`` of one patch ``x (T, B, H, W)`` predicted window by window.

    Windows of ``window`` pixels start every ``stride`` pixels (the last one flush with the
    patch edge); where windows overlap, probabilities are averaged with a tent weight that is
    highest at a window's centre, so each pixel is decided mostly by the windows that see it
    with the most context. ``stride == window`` on a patch cut exactly into windows is the
    stitched sub-patch prediction (each pixel from its one window).
    """
    _, _, h, w = x.shape
    starts_y = sorted({*range(0, h - window + 1, stride), h - window})
    starts_x = sorted({*range(0, w - window + 1, stride), w - window})
    ramp = torch.minimum(torch.arange(window) + 1, window - torch.arange(window)).float().to(x.device)
    weight = ramp[:, None] * ramp[None, :]
    total = None
    norm = torch.zeros(h, w, device=x.device)
    model.eval()
    for y0 in starts_y:
        crops = torch.stack([x[:, :, y0:y0 + window, x0:x0 + window] for x0 in starts_x])
        with precision.autocast(x.device):
            probs = model(crops).float().exp()
        if total is None:
            total = torch.zeros(probs.shape[1], h, w, device=x.device)
        for k, x0 in enumerate(starts_x):
            total[:, y0:y0 + window, x0:x0 + window] += probs[k] * weight
            norm[y0:y0 + window, x0:x0 + window] += weight
    assert total is not None
    return (total / norm).clamp_min(1e-30).log()


def iter_patches(model: torch.nn.Module, dataset: SubPatchDataset, device: torch.device, precision: Precision, *,
                 workers: int = 0, stride: int | None = None) -> Iterator[PatchMaps]:
    """Every patch of ``dataset`` in split order, predicted whole (``stride=None``, the stages'
    way) or window by window (:func:`tiled_log_probs`; for measurements).

    The model runs in eval mode without gradients; its training flag is restored at the end.
    Outputs stay on ``device``.
    """
    loader = DataLoader(WholePatches(dataset), batch_size=None, num_workers=workers,
                        pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    try:
        for p, x, y in loader:
            x = x.to(device, non_blocking=True)
            with torch.no_grad():
                if stride is None:
                    with precision.autocast(device):
                        log_probs = model(x[None])[0].float()
                else:
                    log_probs = tiled_log_probs(model, x, dataset.window, stride, precision)
            yield PatchMaps(int(p), y.to(device, non_blocking=True), log_probs)
    finally:
        model.train(was_training)


def as_samples(maps: torch.Tensor, window: int) -> torch.Tensor:
    """``(..., H, W)`` of one patch -> ``(sub_y * sub_x, ..., window, window)``, the dataset's
    sample order within a patch (row-major sub-patches), so per-sample scoring stays as it was."""
    *lead, h, w = maps.shape
    k = len(lead)
    shaped = maps.reshape(*lead, h // window, window, w // window, window)
    order = (k, k + 2, *range(k), k + 1, k + 3)
    return shaped.permute(order).reshape(-1, *lead, window, window)
