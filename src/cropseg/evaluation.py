"""Model evaluation on parcel pixels: the validation of every epoch and the evaluate stage share it."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from .dataset import SubPatchDataset
from .loss import parcel_nll
from .metrics import ConfusionMatrix, crop_border
from .precision import autocast

CROP_BORDER = 5


def sequential_loader(dataset: SubPatchDataset, batch_size: int, *, rank: int = 0, world_size: int = 1,
                      workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Batches of the dataset in order; under DDP each rank takes every ``world_size``-th batch."""
    positions = np.arange(len(dataset))
    blocks = [positions[i:i + batch_size].tolist() for i in range(0, len(positions), batch_size)]
    return DataLoader(dataset, sampler=blocks[rank::world_size], batch_size=None, num_workers=workers,
                      pin_memory=pin_memory)


@torch.no_grad()
def confusion(model: torch.nn.Module, loader: DataLoader, n_classes: int, device: torch.device, bf16: bool,
              weights: torch.Tensor) -> tuple[ConfusionMatrix, ConfusionMatrix, float]:
    """One pass: confusion matrices over parcel pixels (all, and 5-pixel border cropped) and the
    class-weighted NLL over all parcel pixels; synced across DDP ranks."""
    was_training = model.training
    model.eval()
    full, crop5 = ConfusionMatrix(n_classes, device), ConfusionMatrix(n_classes, device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for batch in loader:
        batch = batch.to(device)
        with autocast(bf16, device):
            log_probs = model(batch.x)
        weighted, weight = parcel_nll(log_probs, batch.y, weights)
        totals += torch.stack([weighted.sum(), weight.sum()]).double()
        prediction = log_probs.argmax(1)
        full.update(prediction, batch.y)
        crop5.update(crop_border(prediction, CROP_BORDER), crop_border(batch.y, CROP_BORDER))
    full.sync()
    crop5.sync()
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    model.train(was_training)
    return full, crop5, float(totals[0] / totals[1].clamp_min(1e-12))


def headline(full: ConfusionMatrix, crop5: ConfusionMatrix) -> dict[str, float]:
    """accuracy / weighted_f1 / macro_f1, and the same on the border-cropped centres."""
    metrics = {}
    for prefix, matrix in (("", full), ("crop5_", crop5)):
        values = matrix.compute()
        for name in ("accuracy", "weighted_f1", "macro_f1"):
            metrics[f"{prefix}{name}"] = float(values[name])
    return metrics
