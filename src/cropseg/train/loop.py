"""The training loop of the ``train_holdout`` and ``train`` stages, readable top to bottom.

One function, :func:`train`, does everything in order: set up (distributed, device, seeds), data,
model, loss, optimiser, resume, then epochs of blocks -> selection -> optimiser steps, validation,
checkpoints, and the final model file. What it does again and again lives beside it, as nanoGPT
keeps ``estimate_loss`` beside its loop: :mod:`cropseg.train.steps` (an optimiser step, a validation)
and :mod:`cropseg.train.resume` (what identifies the run, its checkpoint). Conventions:

* an *epoch* is one pass over the training samples *considered* (every block is read once); with
  selection, fewer samples are *seen* (trained on) than considered;
* the batch loss is the class-weighted NLL summed over the batch's parcel pixels divided by the
  batch's total pixel weight, so ``physical_batch_size`` micro-batches accumulate exactly the
  gradient of one ``batch_size`` batch (and DDP ranks exactly that of one process);
* ``samples_seen`` / ``samples_considered`` / ``pixels_seen`` (labelled pixels trained on) count
  the whole job (all ranks) and are logged with every metric, so methods compare at equal cost.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from ..core.atomic import atomic_file
from ..core.params import Params, Protocol, Run
from ..nn.checkpoint import save_atomic
from ..nn.dataset import BlockSampler, SubPatchDataset, read_split_list
from ..nn.noise import protocol_noise
from ..nn.loss import class_weights
from ..nn.models import build_model
from ..nn.precise_bn import calibration_positions
from ..nn.prefetch import training_loader
from ..nn.precision import fix_cpu_threads, loader_workers, pick_device, resolve_precision
from ..nn.scoring import sequential_loader
from ..nn.snapshots import Snapshots
from ..selection.selector import Selector
from ..split.guards import split_problems, suspicious_best
from ..split.labels import load_label_set
from ..tracking.tracker import Tracker, config_digest
from .resume import Counters, copy_tree, resume, run_config, save_checkpoint
from .steps import Validation, all_reduce_sum, optimizer_step, packed, validate

VAL_COLUMNS = ["accuracy", "weighted_f1", "macro_f1", "crop5_accuracy", "crop5_weighted_f1", "crop5_macro_f1",
               "loss", "lr", "selection/noisy_share_selected", "selection/noisy_share_block",
               "selection/score_selected", "selection/score_rejected"]


@dataclass
class RunPaths:
    """Where a training stage reads and writes (defaults: the dvc.yaml paths)."""

    split_dir: Path
    model_out: Path
    metrics_dir: Path
    checkpoint_dir: Path
    medians: Path = Path("data/medians")
    labels_dir: Path = Path("configs/labels")
    irreducible: Path | None = None
    truth: Path | None = None
    snapshots: Path | None = None  # train stage: models/snapshots (protocol.test_points)
    netcdf: Path = Path("data/netcdf")  # parcel ids, read for protocol.noise_unit: parcel only


@dataclass
class TrainResult:
    best: dict[str, float]
    best_epoch: int
    counters: Counters
    seconds: float
    resumed_from: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def line(self, stage: str) -> str:
        rate = self.counters.samples_seen / self.seconds if self.seconds else 0.0
        resumed = f", resumed after epoch {self.resumed_from}" if self.resumed_from is not None else ""
        first = self.history[0]["epoch"] if self.history else 0
        flag = suspicious_best(self.best_epoch, first, self.best.get("weighted_f1", 0.0))
        return (f"{stage}: {self.counters.epoch} epochs, {self.counters.step} steps, {self.counters.samples_seen} "
                f"samples seen of {self.counters.samples_considered} considered, best val weighted F1 "
                f"{self.best.get('weighted_f1', float('nan')):.4f} (epoch {self.best_epoch}), "
                f"{self.seconds:.1f} s, {rate:.0f} samples/s{resumed}" + (f"; {flag}" if flag else ""))


def _distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank); initialises the process group under torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0"))


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False


def _plateau(optimizer: torch.optim.Optimizer, arch: str, run: Run, schedule: str):
    """The U-Net's ReduceLROnPlateau on val weighted F1 (``lr_schedule: auto``), stepped at each validation."""
    if arch == "unet" and schedule == "auto":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", patience=run.plateau_patience,
                                                          factor=run.plateau_factor)
    return None


def scheduled_lr(run: Run, arch: str, schedule: str, seen: int, budget: int | None, train_samples: int) -> float | None:
    """The learning rate after ``seen`` samples, for the schedules defined per sample seen (None: the
    plateau scheduler or a constant rate decides).

    ConvSTAR's StepLR (``auto``) decays every ``step_size`` epochs *seen* (``step_size x`` the training
    samples), not per pass over the samples considered: a block-``b`` method would otherwise decay ``b``
    times sooner in samples seen than uniform."""
    if schedule == "cosine":
        return run.lr * cosine_factor(seen, budget)
    if schedule == "auto" and arch != "unet":
        return run.lr * run.step_gamma ** (seen // (run.step_size * max(train_samples, 1)))
    return None


def stage_datasets(params: Params, stage: str, paths: RunPaths, label_set) -> tuple[SubPatchDataset, SubPatchDataset]:
    """The training and validation sets of a stage, with the protocol's noise where it belongs.

    Noise goes to the train split (and to val with ``noisy_val``). The holdout stage trains on val and
    validates on the train split (its lists swap roles), so with ``noisy_val`` the irreducible-loss
    model learns from noisy labels, as it would from real declarations. ``train_on_holdout`` adds the
    val patches to the target model's training set, with their labels as the holdout model saw them."""
    loader_cfg = params.loader
    common = dict(label_set=label_set, months=loader_cfg.months, normalize=loader_cfg.normalize)
    noise = protocol_noise(params.protocol, label_set, paths.netcdf)
    noisy_val = params.protocol.noisy_val
    train_list = read_split_list(paths.split_dir / "train.txt")
    val_list = read_split_list(paths.split_dir / "val.txt")
    clean_paths: frozenset[str] = frozenset()
    if stage == "train" and params.protocol.train_on_holdout:
        clean_paths = frozenset() if noisy_val else frozenset(val_list)
        train_list = train_list + [path for path in val_list if path not in set(train_list)]
    train_set = SubPatchDataset(paths.medians, train_list, skip_empty=loader_cfg.skip_empty,
                                noise=noise if stage == "train" or noisy_val else None, clean_paths=clean_paths,
                                **common)
    val_set = SubPatchDataset(paths.medians, val_list, skip_empty=True,
                              noise=noise if stage == "holdout" or noisy_val else None, **common)
    return train_set, val_set


def train(params: Params, stage: str, paths: RunPaths, *, progress: bool = True) -> TrainResult:
    """Train one model (``stage``: ``holdout`` or ``train``) and write its model file and metrics."""
    started = time.perf_counter()
    run: Run = params.holdout if stage == "holdout" else params.train
    rank, world_size, local_rank = _distributed()
    if run.batch_size % world_size:
        raise ValueError(f"{stage}.batch_size {run.batch_size} is not divisible by the {world_size} processes")
    device = pick_device(run.device, local_rank)
    precision = resolve_precision(run.precision, device)
    fix_cpu_threads(run.cpu_threads, device)
    _seed_everything(run.seed, run.deterministic)

    # ---- data: the split's sub-patches, months chosen, labels mapped to model classes
    label_set = load_label_set(params.labels, paths.labels_dir)
    loader_cfg = params.loader
    train_set, val_set = stage_datasets(params, stage, paths, label_set)
    if stage == "train" and params.selection.drop_irreducible > 0:
        dropped = drop_least_learnable(train_set, paths.irreducible, params.selection.drop_irreducible)
        if rank == 0:
            print(f"train: IL filter dropped {dropped} of {dropped + len(train_set)} training samples "
                  f"(highest irreducible loss)")
    if len(train_set) == 0 or len(val_set) == 0:
        raise ValueError(f"{stage}: empty split (train {len(train_set)}, val {len(val_set)} samples with parcels)")
    counts = train_set.class_pixel_counts()
    bn_sample = calibration_positions(len(train_set), params.model.precise_bn_samples, run.seed)
    if stage == "train":
        _guard_split(counts, val_set.class_pixel_counts(), label_set.class_names, run.allow_degenerate_split, rank)

    # ---- model, loss weights, optimiser, scheduler
    model = build_model(params.model.arch, bands=train_set.bands, months=train_set.months,
                        n_classes=label_set.n_classes, width=params.model.width, depth=params.model.depth,
                        norm=params.model.norm, class_frequencies=counts if counts[1:].sum() > 0 else None).to(device)
    if precision.autocasts:
        model = model.to(memory_format=torch.channels_last)
    weights = class_weights(counts, params.loss.class_weights_weight, weighted=params.loss.weighted).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    scaler = precision.grad_scaler(device)  # fp16's loss scaler; a no-op in the other precisions
    # the comparison protocol (budget of samples seen, schedule, snapshots, kept model) is the target model's
    protocol = params.protocol if stage == "train" else Protocol()
    scheduler = _plateau(optimizer, params.model.arch, run, protocol.lr_schedule)
    net = model
    if world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)

    # ---- selection: how a block of samples is reduced to the batches trained on
    selection = params.selection if stage == "train" else None
    selector = Selector(selection, weights=weights, physical_batch_size=run.physical_batch_size,
                        precision=precision, device=device, seed=run.seed, irreducible_path=paths.irreducible,
                        truth=_truth_for(train_set, paths.truth), n_classes=label_set.n_classes)
    # the IL filter reads the stored holdout losses too: they are an input of the run
    reads_irreducible = selector.uses_irreducible or (stage == "train" and params.selection.drop_irreducible > 0)
    local_batch = run.batch_size // world_size
    sampler = BlockSampler(len(train_set), selector.block_samples(run.batch_size), seed=run.seed,
                           rank=rank, world_size=world_size)
    workers = loader_workers(loader_cfg.workers, device)  # null: chosen from the machine
    train_loader = training_loader(train_set, sampler, workers=workers, device=device)  # threads on CUDA
    val_loader = sequential_loader(val_set, run.physical_batch_size, rank=rank, world_size=world_size,
                                   workers=workers, pin_memory=device.type == "cuda")

    # ---- resume: only a checkpoint of this exact run (params, inputs, world size, code)
    run_params, config = run_config(params, stage, run, selection, paths, uses_irreducible=reads_irreducible,
                                    world_size=world_size)
    digest = config_digest(config)
    last_path, best_path = paths.checkpoint_dir / "last.pt", paths.checkpoint_dir / "best.pt"
    state = resume(last_path, digest, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                   selector=selector, stage=stage, rank=rank, checkpoint_dir=paths.checkpoint_dir,
                   metrics_dir=paths.metrics_dir)
    counters, resumed = state.counters, state.resumed_from is not None
    snapshots = Snapshots(paths.checkpoint_dir / "snapshots", protocol.samples_seen, protocol.test_points,
                          counters.samples_seen, fresh=not resumed, writer=rank == 0)
    tracker = Tracker(paths.metrics_dir, stage=stage, wandb_mode=params.tracking.wandb, project=params.tracking.project,
                      config={**config, "digest": digest}, params=run_params,
                      inputs=_read_inputs(paths, params.labels, reads_irreducible),
                      resume_step=counters.step if resumed else None,
                      step_columns=["loss", "lr"] + selector.telemetry_columns, val_columns=VAL_COLUMNS, rank=rank)

    val = Validation(model=model, optimizer=optimizer, scheduler=scheduler, selector=selector, tracker=tracker,
                     train_set=train_set, bn_sample=bn_sample, val_loader=val_loader, weights=weights, params=params,
                     run=run, label_set=label_set, keep=protocol.keep, best_path=best_path, device=device,
                     precision=precision, rank=rank)

    # ---- epochs: blocks -> selection -> one optimiser step per batch, until the epochs or the
    # samples-seen budget (protocol.samples_seen) are used up
    while not _finished(counters, run.epochs, protocol.samples_seen):
        epoch = counters.epoch
        sampler.set_epoch(epoch)
        net.train()
        bar = tqdm(train_loader, desc=f"{stage} epoch {epoch + 1}" + (f"/{run.epochs}" if protocol.samples_seen is None
                                                                     else ""), unit="block",
                   disable=not progress or rank != 0, leave=False)
        for block in bar:
            block = block.to(device, non_blocking=True)
            considered = int(all_reduce_sum(torch.tensor(len(block), device=device), world_size))
            batches, telemetry = selector.select(model, block, local_batch, step=counters.step, rank=rank,
                                                  world_size=world_size)
            counters.samples_considered += considered
            for batch in batches:
                # under DDP a rank's share of a small selected batch can be empty: it still steps (on a
                # sample of its block with zero weight), or the other ranks' gradient all-reduce would hang
                empty = len(batch) == 0
                loss, pixels, seen = optimizer_step(net, optimizer, block.take(slice(0, 1)) if empty else batch,
                                                    weights, run, precision, device, world_size, scaler=scaler,
                                                    contributes=not empty)
                counters.step += 1
                counters.samples_seen += seen
                counters.pixels_seen += pixels
                tracker.log("steps", {**counters.as_dict(), "epoch": epoch},
                            {"loss": loss, "lr": optimizer.param_groups[0]["lr"], **telemetry})
                telemetry = {}
                lr = scheduled_lr(run, params.model.arch, protocol.lr_schedule, counters.samples_seen,
                                  protocol.samples_seen, len(train_set))
                if lr is not None:
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                if snapshots.due(counters.samples_seen):  # equal samples seen for every method
                    metrics = validate(val, state)
                    if rank == 0:
                        snapshots.save(packed(model, params, label_set, metrics, counters.epoch), counters.as_dict())
                if protocol.samples_seen is not None and counters.samples_seen >= protocol.samples_seen:
                    break
            bar.set_postfix(loss=f"{loss:.3f}")
            if _finished(counters, run.epochs, protocol.samples_seen, within_epoch=True):
                break
        counters.epoch = epoch + 1

        by_epoch = protocol.samples_seen is None and counters.epoch % run.val_every == 0
        last = _finished(counters, run.epochs, protocol.samples_seen)
        if (by_epoch or last) and state.validated_at != counters.samples_seen:
            validate(val, state)
        tracker.flush()
        if rank == 0:
            save_checkpoint(last_path, digest, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                            selector=selector, state=state, checkpoint_dir=paths.checkpoint_dir,
                            metrics_dir=paths.metrics_dir)

    # ---- the final outputs: the kept model (best val, or last), its metrics as the run's summary, snapshots
    if rank == 0:
        paths.model_out.parent.mkdir(parents=True, exist_ok=True)
        if protocol.keep == "last":
            state.best, state.best_epoch = state.history[-1], counters.epoch
            save_atomic(packed(model, params, label_set, state.best, counters.epoch), best_path)
        save_atomic(torch.load(best_path, weights_only=True), paths.model_out)
        if paths.snapshots is not None:
            copy_tree(snapshots.folder, paths.snapshots)
        # wall time goes to W&B only: in metrics.json it would differ at every run (cropseg.tracking.tracker)
        kept = "best" if protocol.keep == "best_val" else "final"
        tracker.summary({f"{kept}/{k}": v for k, v in state.best.items() if "/" not in k}  # not the telemetry
                        | {f"{kept}/epoch": state.best_epoch, "train_samples": len(train_set),
                           "wall_time_s": time.perf_counter() - started}
                        | selector.run_telemetry())
        tracker.log_outputs({"model": paths.model_out})
    tracker.close()
    if rank == 0:
        write_cost(paths.metrics_dir, time.perf_counter() - started, counters)
    if world_size > 1:
        dist.barrier()
    return TrainResult(state.best, state.best_epoch, counters, time.perf_counter() - started, state.resumed_from,
                       state.history)


COST_FILE = "cost.json"


def write_cost(folder: Path, seconds: float, counters: Counters) -> None:
    """``cost.json``: the run's wall time beside its sample counts, for the comparison's cost units.

    Apart from metrics.json on purpose: wall time differs at every run, and metrics.json stays
    byte-identical for the same params on a CPU (the determinism promise)."""
    with atomic_file(folder / COST_FILE) as out:
        out.write(json.dumps({"wall_time_s": round(seconds, 3), "samples_seen": counters.samples_seen,
                              "samples_considered": counters.samples_considered}, indent=1) + "\n")


def _finished(counters: Counters, epochs: int, budget: int | None, *, within_epoch: bool = False) -> bool:
    """Training ends after ``epochs`` passes over the samples considered, or at ``budget`` samples seen."""
    if budget is not None:
        return counters.samples_seen >= budget
    return not within_epoch and counters.epoch >= epochs


def cosine_factor(seen: int, budget: int) -> float:
    """Cosine decay from 1 to 0 over ``budget`` samples seen: the same learning rate at the same
    samples seen for every method, whatever its block size or steps."""
    return 0.5 * (1.0 + math.cos(math.pi * min(seen / budget, 1.0)))


def _read_inputs(paths: RunPaths, labels: str, uses_irreducible: bool) -> dict[str, Path | None]:
    """What this run reads, by its dvc.yaml path: hashed for the W&B run's lineage."""
    inputs = {str(paths.medians): paths.medians, str(paths.split_dir / "train.txt"): paths.split_dir / "train.txt",
              str(paths.split_dir / "val.txt"): paths.split_dir / "val.txt",
              str(paths.labels_dir / f"{labels}.yaml"): paths.labels_dir / f"{labels}.yaml"}
    if uses_irreducible and paths.irreducible is not None:
        inputs[str(paths.irreducible)] = paths.irreducible
    return inputs


def _guard_split(train_counts, val_counts, class_names, allowed: bool, rank: int) -> None:
    problems = split_problems(np.asarray(train_counts), np.asarray(val_counts), class_names)
    if problems and not allowed:
        raise ValueError("refusing to train: " + "; ".join(problems)
                         + " (choose another split or label set, or set train.allow_degenerate_split: true)")
    for problem in problems if rank == 0 else []:
        print(f"train: warning: {problem}")


def _truth_for(dataset: SubPatchDataset, truth_path: Path | None) -> dict[str, Any] | None:
    """Noisy / labelled pixels per training sample (model-class space), for the selection telemetry.

    From the protocol's label noise (the pixels it changed) and from the synthetic truth table (the
    generator's own noise), whichever exist; None without either."""
    from ..selection.selector import truth_per_sample

    truth = truth_per_sample(dataset, truth_path) if truth_path is not None and truth_path.exists() else None
    if dataset.noisy_pixels is None:
        return truth
    # a pixel the protocol noised is wrong whatever the generator did to it (a wrong label noised onto
    # the clean class is rare, and not counted); elsewhere the generator's noise counts
    generator_noisy = truth["noisy"] if truth is not None else np.zeros_like(dataset.parcel_pixels)
    return {"parcel": dataset.parcel_pixels,
            "noisy": np.where(dataset.noisy_pixels > 0, dataset.noisy_pixels, generator_noisy)}


def drop_least_learnable(dataset: SubPatchDataset, irreducible: Path | None, fraction: float) -> int:
    """The IL filter (``selection.drop_irreducible``): remove from ``dataset.indices`` the ``fraction`` of
    samples the irreducible-loss model finds hardest (highest stored loss; ties: the later sample).
    Returns how many were dropped."""
    from ..selection.selector import IRREDUCIBLE_FILE

    if irreducible is None or not (irreducible / IRREDUCIBLE_FILE).is_file():
        raise ValueError(f"selection.drop_irreducible needs the stored irreducible losses "
                         f"({irreducible}/{IRREDUCIBLE_FILE}: run the irreducible_loss stage)")
    losses = np.load(irreducible / IRREDUCIBLE_FILE)
    if losses.shape[0] != len(dataset.records) * dataset.per_patch:
        raise ValueError(f"{irreducible}/{IRREDUCIBLE_FILE}: {losses.shape[0]} losses for a training set of "
                         f"{len(dataset.records) * dataset.per_patch} sub-patches (protocol.train_on_holdout "
                         f"cannot be combined with the IL filter)")
    n_drop = int(round(fraction * len(dataset.indices)))
    order = np.argsort(losses[dataset.indices], kind="stable")  # ascending: the most learnable first
    dataset.indices = np.sort(dataset.indices[order[:len(order) - n_drop]])
    return n_drop
