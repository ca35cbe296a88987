"""Precise BatchNorm: population statistics recomputed for the current weights before they are used.

BatchNorm's running statistics are an exponential moving average of the *training* batches: they
lag the weights (on a small data set eval-mode scores jumped from epoch to epoch) and, with data
selection, describe only the samples the selector kept. "Precise BN" (Wu & Johnson, *Rethinking
"Batch" in BatchNorm*, 2021, https://arxiv.org/abs/2105.07576, section 3; fvcore's
``update_bn_stats``) replaces them by the equal-weight average of the batch statistics of a
fixed sample of training inputs, computed in train mode without gradients with the current
weights. Eval mode then normalises every sample with those population statistics, so a
prediction no longer depends on the other samples of its batch.

The sample is a seeded uniform draw of training sub-patches, the same at every call (and on
every DDP rank, so all ranks compute identical statistics), independent of the selection method.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from .dataset import SubPatchDataset
from .precision import Precision

#: second word of the generator seed, so the calibration sample never coincides with another draw
_SAMPLE_STREAM = 0xB17


def population_norms(model: nn.Module) -> list[_BatchNorm]:
    """The BatchNorm layers that keep running (population) statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def calibration_positions(n: int, samples: int, seed: int) -> np.ndarray:
    """A seeded uniform sample (without replacement, sorted) of ``samples`` of the ``n`` dataset positions."""
    if n <= samples:
        return np.arange(n)
    return np.sort(np.random.default_rng([seed, _SAMPLE_STREAM]).choice(n, size=samples, replace=False))


@torch.no_grad()
def recalibrate(model: nn.Module, dataset: SubPatchDataset, positions: np.ndarray, *, batch_size: int,
                device: torch.device, precision: Precision, progress: bool = False) -> int:
    """Reset every population BatchNorm and set it to the average statistics of ``dataset[positions]``.

    Runs in train mode with ``momentum=None`` (a cumulative average over the calibration batches)
    and restores momentum and the training flag afterwards. Batches are equal-sized except the
    last.

    Args:
        model: the model whose population BatchNorms are recomputed, in place.
        dataset: the training sub-patches.
        positions: which of them (:func:`calibration_positions`).
        batch_size: sub-patches per forward pass.
        device: where the model is.
        precision: the autocast of the forward passes (as training does).
        progress: show a progress bar.

    Returns:
        The number of batches (0 when the model has no population BatchNorm or ``positions`` is
        empty).
    """
    norms = population_norms(model)
    if not norms or len(positions) == 0:
        return 0
    momenta = [bn.momentum for bn in norms]
    was_training = model.training
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    batches = 0
    try:
        starts = range(0, len(positions), batch_size)
        for start in tqdm(starts, desc="precise BN", unit="batch", disable=not progress, leave=False):
            batch = dataset[positions[start:start + batch_size]].to(device)
            with precision.autocast(device):
                model(batch.x)
            batches += 1
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        model.train(was_training)
    return batches


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Inside: population BatchNorms normalise with the batch's own statistics and leave their
    running statistics untouched (train-mode normalisation at momentum 0), the rest of the model
    in whatever mode it is. For scoring a block the way the model trains on it."""
    norms = population_norms(model)
    saved = [(bn.training, bn.momentum, bn.num_batches_tracked.clone()) for bn in norms]
    for bn in norms:
        bn.train()
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, (training, momentum, tracked) in zip(norms, saved):
            bn.train(training)
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
