"""The two things the training loop does again and again: an optimiser step and a validation.

Beside the loop (:mod:`cropseg.train.loop`) as nanoGPT keeps ``estimate_loss`` beside its own:
:func:`optimizer_step` accumulates micro-batches into one batch's gradient (and DDP ranks into one
process's), :func:`validate` recalibrates BatchNorm, scores the val split and keeps the best model.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..core.params import Params, Run
from ..nn.checkpoint import model_file, save_atomic
from ..nn.dataset import SubPatchDataset
from ..nn.loss import parcel_nll
from ..nn.precise_bn import recalibrate
from ..nn.precision import Precision
from ..nn.scoring import confusion, headline
from ..selection.selector import Selector
from ..split.labels import LabelSet
from .resume import Plateau, RunState

if TYPE_CHECKING:  # the type only: an optimiser step (and bench/train_throughput.py) needs no tracker
    from ..tracking.tracker import Tracker


def all_reduce_sum(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """``value`` summed over the DDP processes, in place (itself in a single process)."""
    if world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def optimizer_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batch, weights: torch.Tensor, run: Run,
                   precision: Precision, device: torch.device, world_size: int, *, scaler: torch.amp.GradScaler,
                   contributes: bool = True) -> tuple[float, int, int]:
    """One optimiser step on ``batch`` in micro-batches; returns (loss, labelled pixels, samples), job-wide.

    ``scaler`` (:meth:`cropseg.nn.precision.Precision.grad_scaler`) scales the loss under fp16, so
    that small gradients do not underflow, and unscales the gradients before clipping; it skips
    the step when they overflowed (and lowers the scale). In the other precisions it does nothing.
    Under DDP every rank sees the same all-reduced gradients, so all of them skip or step together.

    ``contributes=False``: this rank has no sample in the step; ``batch`` only keeps it in the
    collective calls, with zero weight in the loss, the gradient and the counters."""
    optimizer.zero_grad(set_to_none=True)
    # normalise by the whole (all-rank) batch's pixel weight: accumulation and DDP give one big batch's gradient
    share = 1.0 if contributes else 0.0
    totals = torch.stack([weights[batch.y].sum(), (batch.y > 0).sum().float(), torch.tensor(float(len(batch)),
                                                                                             device=device)]) * share
    total_weight, pixels, samples = all_reduce_sum(totals, world_size).tolist()
    scale = share * world_size / max(total_weight, 1e-12)  # DDP averages gradients over ranks
    loss_sum = torch.zeros((), device=device)
    micro_batches = range(0, len(batch), run.physical_batch_size)
    for i, start in enumerate(micro_batches):
        micro = batch.take(slice(start, start + run.physical_batch_size))
        sync = i == len(micro_batches) - 1 or not hasattr(net, "no_sync")
        with (contextlib.nullcontext() if sync else net.no_sync()), precision.autocast(device):
            weighted, _ = parcel_nll(net(micro.x), micro.y, weights)
            scaler.scale(weighted.sum() * scale).backward()
        loss_sum += weighted.sum().detach() * share
    if run.grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(net.parameters(), run.grad_clip)
    scaler.step(optimizer)  # optimizer.step(), unless fp16 gradients overflowed
    scaler.update()
    loss = float(all_reduce_sum(loss_sum, world_size)) / max(total_weight, 1e-12)
    return loss, int(pixels), int(samples)


def packed(model: torch.nn.Module, params: Params, label_set: LabelSet, metrics: dict[str, float],
           epoch: int) -> dict[str, Any]:
    """The model file of the current weights (best.pt, snapshots, the stage's model), with ``metrics``."""
    return model_file(model, arch=params.model.arch, model_config=model.config, label_set=label_set.to_dict(),
                      loader=params.loader.model_dump(), metrics=metrics, epoch=epoch)


@dataclass(frozen=True)
class Validation:
    """What :func:`validate` uses besides the run's state; fixed for the whole run."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Plateau | None  # stepped on val weighted F1
    selector: Selector
    tracker: Tracker
    train_set: SubPatchDataset  # precise BN recalibrates on a fixed sample of it (bn_sample)
    bn_sample: np.ndarray
    val_loader: DataLoader
    weights: torch.Tensor
    params: Params
    run: Run
    label_set: LabelSet
    keep: str  # protocol.keep
    best_path: Path
    device: torch.device
    precision: Precision
    rank: int


def validate(v: Validation, state: RunState) -> dict[str, float]:
    """Precise BN, then val metrics at the current counters; keeps the best model (keep: best_val).

    Args:
        v: the run's model, data and loggers.
        state: gets the metrics in its history, and the best ones and their epoch.

    Returns:
        The val metrics, the learning rate and the selection's epoch telemetry.
    """
    state.validated_at = state.counters.samples_seen
    # population statistics of the current weights, before they are validated or saved
    recalibrate(v.model, v.train_set, v.bn_sample, batch_size=v.run.physical_batch_size, device=v.device,
                precision=v.precision)
    full, crop5, val_loss = confusion(v.model, v.val_loader, v.label_set.n_classes, v.device, v.precision, v.weights)
    metrics = headline(full, crop5) | {"loss": val_loss, "lr": v.optimizer.param_groups[0]["lr"]}
    metrics |= v.selector.epoch_telemetry()
    state.history.append({"epoch": state.counters.epoch, **metrics})
    v.tracker.log("val", state.counters.as_dict(), metrics)
    if v.scheduler is not None:
        v.scheduler.step(metrics["weighted_f1"])
    if v.keep == "best_val" and (not state.best or metrics["weighted_f1"] > state.best["weighted_f1"]):
        state.best, state.best_epoch = metrics, state.counters.epoch
        if v.rank == 0:
            save_atomic(packed(v.model, v.params, v.label_set, metrics, state.counters.epoch), v.best_path)
    return metrics
