"""Resuming a training run: what identifies the run, and the state it continues from.

A checkpoint resumes only the exact run that wrote it: its digest covers the params the stage
reads, the digests of its inputs, the world size and the training code (:func:`run_config`). The
end of every epoch writes one (:func:`save_checkpoint`); a restarted stage continues after the
last epoch it finished (:func:`resume`), its metric logs restored from beside the checkpoint.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..core.files import sha256_of
from ..core.params import Params, Protocol, Run, Selection
from ..medians.store_reader import store_digest
from ..tracking.lineage import code_digest
from ..nn.checkpoint import load_checkpoint, save_atomic
from ..selection.selector import Selector

if TYPE_CHECKING:
    from .loop import RunPaths

Plateau = torch.optim.lr_scheduler.ReduceLROnPlateau
NOISE_KEYS = {"label_noise", "noise_unit", "noise_classes", "similar", "systematic", "noise_seed", "noisy_val"}


@dataclass
class Counters:
    step: int = 0
    epoch: int = 0
    samples_seen: int = 0
    samples_considered: int = 0
    pixels_seen: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class RunState:
    """Where a run stands: its counters, the best validation so far and every validation's metrics.

    ``resumed_from``: the epoch a resumed run continues after (None: a fresh run);
    ``validated_at``: samples seen at the last validation (-1: none yet in this process).
    """

    counters: Counters = field(default_factory=Counters)
    best: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    validated_at: int = -1


def run_config(params: Params, stage: str, run: Run, selection: Selection | None, paths: RunPaths, *,
               uses_irreducible: bool, world_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(run_params, config)``: the params this stage reads, and everything a checkpoint must match.

    Args:
        params: the whole params.yaml.
        stage: ``holdout`` or ``train``.
        run: the stage's params section.
        selection: ``params.selection`` for the train stage, None for the holdout stage.
        paths: where the run reads (its inputs' digests) and writes.
        uses_irreducible: the selection method reads the stored holdout losses.
        world_size: DDP processes.

    Returns:
        The params (also the tracker's) and the config whose :func:`cropseg.tracking.tracker.config_digest`
        tags the checkpoints.
    """
    run_params = {"labels": params.labels, "model": params.model.model_dump(), "loader": params.loader.model_dump(),
                  "loss": params.loss.model_dump(), stage: run.model_dump()}
    if selection is not None:
        run_params["selection"] = selection.model_dump()
    if params.protocol != Protocol():  # the holdout stage reads the noise keys only
        run_params["protocol"] = params.protocol.model_dump(include=None if stage == "train" else NOISE_KEYS)
    config = {
        "stage": stage, "params": run_params,
        "inputs": {"medians_meta": store_digest(paths.medians),
                   "split_train": _file_digest(paths.split_dir / "train.txt"),
                   "split_val": _file_digest(paths.split_dir / "val.txt"),
                   "labels": _file_digest(paths.labels_dir / f"{params.labels}.yaml"),
                   "irreducible": _file_digest(paths.irreducible / "losses.npy") if uses_irreducible else None},
        "world_size": world_size,
        "code": code_digest(),  # a checkpoint of other code (another model, loss or loop) is stale too
    }
    return run_params, config


def resume(path: Path, digest: str, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scheduler: Plateau | None, scaler: torch.amp.GradScaler, selector: Selector, stage: str, rank: int,
           checkpoint_dir: Path, metrics_dir: Path) -> RunState:
    """The state of this exact run's checkpoint at ``path``, loaded into the objects; a fresh state without.

    Args:
        path: the last checkpoint (``last.pt``).
        digest: this run's config digest; a checkpoint of another one is ignored.
        model, optimizer, scheduler, scaler, selector: get the checkpoint's state (the scheduler may be
            None; the loss scaler's state is fp16's current scale, so a resumed fp16 run continues exactly).
        stage: named in the resume message.
        rank: the process that prints and restores the metric logs.
        checkpoint_dir: holds the logs saved with the checkpoint (``metrics/``).
        metrics_dir: the stage's DVCLive folder, replaced by those logs.

    Returns:
        The counters, best metrics and history to continue from (``resumed_from`` set), or a fresh state.
    """
    saved = load_checkpoint(path, digest)
    if saved is None:
        return RunState()
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"]:  # empty: a disabled scaler (not fp16), nothing to restore
        scaler.load_state_dict(saved["scaler"])
    selector.load_state_dict(saved["selector"])
    counters = Counters(**saved["counters"])
    state = RunState(counters, saved["best"], saved["best_epoch"], saved["history"], resumed_from=counters.epoch)
    if rank == 0:
        print(f"{stage}: resuming after epoch {counters.epoch} from {path}")
        # `dvc repro` deletes the stage's outputs (the metric logs) before it runs the stage again
        copy_tree(checkpoint_dir / "metrics", metrics_dir)
    return state


def save_checkpoint(path: Path, digest: str, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Plateau | None, scaler: torch.amp.GradScaler, selector: Selector, state: RunState,
                    checkpoint_dir: Path, metrics_dir: Path) -> None:
    """Write the checkpoint :func:`resume` continues from (rank 0 only), the metric logs so far beside it.

    The logs go first: a resumed run restores them and drops whatever was logged after the
    checkpoint it resumes from.
    """
    copy_tree(metrics_dir, checkpoint_dir / "metrics")
    save_atomic({"digest": digest, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "scaler": scaler.state_dict(),
                 "selector": selector.state_dict(), "counters": state.counters.as_dict(), "best": state.best,
                 "best_epoch": state.best_epoch, "history": state.history}, path)


def copy_tree(source: Path, target: Path) -> None:
    """Replace ``target`` by a copy of ``source`` (the small metric logs of a run)."""
    if not source.is_dir():
        return
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def _file_digest(path: Path | None) -> str | None:
    return sha256_of(path) if path is not None and path.exists() else None
