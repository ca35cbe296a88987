"""Scoring on parcel pixels: the validation of every epoch and the evaluate stage share it.

Not a stage (the evaluate stage is :mod:`cropseg.evaluate.stage`): the prediction loop and the
confusion-matrix accumulators both of them run, so that validation and test scores agree.

:func:`predict` runs a model over a loader; :func:`confusion` (validation) and
:class:`SplitConfusion` (the evaluate stage: also per patch) accumulate its predictions.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .dataset import Batch, SubPatchDataset
from .loss import parcel_nll
from .metrics import ConfusionMatrix, crop_border, per_sample_confusion
from .precision import Precision

CROP_BORDER = 5


def sequential_loader(dataset: SubPatchDataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                      workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of the dataset in order; under DDP each rank takes every ``world_size``-th batch."""
    positions = np.arange(len(dataset))
    blocks = [positions[i:i + batch_size].tolist() for i in range(0, len(positions), batch_size)]
    return DataLoader(dataset, sampler=blocks[rank::world_size], batch_size=None, num_workers=workers,
                      pin_memory=pin_memory)


@torch.no_grad()
def confusion(model: torch.nn.Module, loader: DataLoader, n_classes: int, device: torch.device, precision: Precision,
              weights: torch.Tensor) -> tuple[ConfusionMatrix, ConfusionMatrix, float]:
    """One pass: confusion matrices over parcel pixels (all, and 5-pixel border cropped) and the
    class-weighted NLL over all parcel pixels; synced across DDP ranks."""
    full, crop5 = ConfusionMatrix(n_classes, device), ConfusionMatrix(n_classes, device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for batch, log_probs in predict(model, loader, device, precision):
        weighted, weight = parcel_nll(log_probs, batch.y, weights)
        totals += torch.stack([weighted.sum(), weight.sum()]).double()
        prediction = log_probs.argmax(1)
        full.update(prediction, batch.y)
        crop5.update(crop_border(prediction, CROP_BORDER), crop_border(batch.y, CROP_BORDER))
    full.sync()
    crop5.sync()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    return full, crop5, float(totals[0] / totals[1].clamp_min(1e-12))


def predict(model: torch.nn.Module, loader: DataLoader, device: torch.device,
            precision: Precision) -> Iterator[tuple[Batch, torch.Tensor]]:
    """``(batch on device, log-probabilities (N, C, H, W))`` for every batch of ``loader``.

    The model runs in eval mode without gradients; its training flag is restored at the end
    (also when the caller stops early).
    """
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            batch = batch.to(device, non_blocking=True)
            with torch.no_grad(), precision.autocast(device):
                log_probs = model(batch.x)
            yield batch, log_probs
    finally:
        model.train(was_training)


class SplitConfusion:
    """Confusion matrices of one split, accumulated batch by batch on the device.

    ``full``: every parcel pixel; ``crop5``: the sub-patch centres (``CROP_BORDER`` pixels
    removed); ``patches``: ``(n_patches, C, C)``, one matrix per patch of the split list (sample
    ``i`` belongs to patch ``i // per_patch``), whose sum is ``full``'s matrix.
    """

    def __init__(self, n_classes: int, n_patches: int, per_patch: int, device: torch.device | str = "cpu"):
        self.n_classes, self.per_patch = n_classes, per_patch
        self.full = ConfusionMatrix(n_classes, device)
        self.crop5 = ConfusionMatrix(n_classes, device)
        self.patches = torch.zeros(n_patches, n_classes, n_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, index: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: global sample indices (N,), predicted classes and targets (N, H, W)."""
        device = self.patches.device
        index, prediction, target = index.to(device), prediction.to(device), target.to(device)
        self.full.update(prediction, target)
        self.crop5.update(crop_border(prediction, CROP_BORDER), crop_border(target, CROP_BORDER))
        per_sample = per_sample_confusion(prediction, target, self.n_classes)
        self.patches.index_add_(0, torch.div(index, self.per_patch, rounding_mode="floor"), per_sample)

    def sync(self) -> None:
        """Sum over DDP processes (a no-op in a single process)."""
        self.full.sync()
        self.crop5.sync()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.patches, op=dist.ReduceOp.SUM)

    def headline(self) -> dict[str, float]:
        return headline(self.full, self.crop5)


def headline(full: ConfusionMatrix, crop5: ConfusionMatrix) -> dict[str, float]:
    """accuracy / weighted_f1 / macro_f1, and the same on the border-cropped centres."""
    metrics = {}
    for prefix, matrix in (("", full), ("crop5_", crop5)):
        values = matrix.compute()
        for name in ("accuracy", "weighted_f1", "macro_f1"):
            metrics[f"{prefix}{name}"] = float(values[name])
    return metrics
