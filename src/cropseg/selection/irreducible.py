"""The ``irreducible_loss`` stage: the holdout model's loss on every training sample, computed once.

RHO-Loss scores a sample by its training loss minus its *irreducible* loss, the loss of a model
trained on holdout data. As in the RHO-Loss paper, the holdout model's losses are precomputed in
one pass instead of running a second model forward at every training step. Values are stored
aligned with the training sample's global index (``cropseg.nn.dataset``), for every sub-patch of
the training split; samples without parcel pixels get ``+inf`` so that ``rho_loss`` and
``irreducible`` rank them lowest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core.atomic import atomic_dir
from ..nn.checkpoint import load_model
from ..nn.dataset import SubPatchDataset, read_split_list
from ..nn.scoring import sequential_loader
from ..core.files import sha256_of
from ..nn.noise import protocol_noise
from ..split.labels import LabelSet
from ..nn.loss import class_weights, per_sample_loss
from ..core.params import Params
from ..nn.precision import Precision, fix_cpu_threads, loader_workers, pick_device, resolve_precision
from .selector import IRREDUCIBLE_FILE


@dataclass(frozen=True)
class IrreducibleSummary:
    samples: int
    without_parcels: int
    mean_loss: float
    seconds: float

    def line(self) -> str:
        return (f"irreducible_loss: {self.samples} training samples ({self.without_parcels} without parcels), "
                f"mean holdout loss {self.mean_loss:.4f}, {self.seconds:.1f} s, "
                f"{self.samples / max(self.seconds, 1e-9):.0f} samples/s")


@torch.no_grad()
def holdout_losses(model: torch.nn.Module, dataset: SubPatchDataset, weights: torch.Tensor, *, batch_size: int,
                   device: torch.device, precision: Precision, workers: int = 0,
                   progress: bool = True) -> np.ndarray:
    """Mean class-weighted parcel-pixel NLL of every sample, indexed by global index (+inf: no parcels)."""
    losses = np.full(len(dataset.records) * dataset.per_patch, np.inf, dtype=np.float32)
    model.eval()
    loader = sequential_loader(dataset, batch_size, workers=workers, pin_memory=device.type == "cuda")
    for batch in tqdm(loader, desc="irreducible_loss", unit="batch", disable=not progress):
        batch = batch.to(device, non_blocking=True)
        with precision.autocast(device):
            log_probs = model(batch.x)
        per_sample = per_sample_loss(log_probs, batch.y, weights, empty=float("inf"))
        losses[batch.index.cpu().numpy()] = per_sample.cpu().numpy()
    return losses


def run_irreducible(params: Params, *, holdout_model: Path, medians: Path, split_dir: Path, out: Path,
                    netcdf: Path = Path("data/netcdf"), progress: bool = True) -> IrreducibleSummary:
    """The stage: store the holdout model's per-sample loss over the training split."""
    started = time.perf_counter()
    device = pick_device(params.train.device)
    precision = resolve_precision(params.train.precision, device)
    fix_cpu_threads(params.train.cpu_threads, device)
    model, content = load_model(holdout_model, device)
    label_set = LabelSet.from_dict(content["labels"])
    loader = params.loader
    # every training sub-patch, empty ones included, so the array covers every global index; with the
    # protocol's label noise, as the target model will see them (the irreducible loss of a wrong label)
    noise = protocol_noise(params.protocol, label_set, netcdf)
    dataset = SubPatchDataset(medians, read_split_list(split_dir / "train.txt"), label_set, months=loader.months,
                              normalize=loader.normalize, skip_empty=False, noise=noise)
    # the loss the target model trains with: class weights from the training split's pixel counts, as in
    # train (empty sub-patches add background pixels only, which the weights ignore, so skip_empty is moot)
    counts = dataset.class_pixel_counts()
    weights = class_weights(counts, params.loss.class_weights_weight, weighted=params.loss.weighted).to(device)
    losses = holdout_losses(model, dataset, weights, batch_size=params.train.physical_batch_size, device=device,
                            precision=precision, workers=loader_workers(loader.workers, device), progress=progress)
    finite = np.isfinite(losses)
    with atomic_dir(out) as tmp:
        np.save(tmp / IRREDUCIBLE_FILE, losses)
        meta = {"samples": int(losses.size), "without_parcels": int((~finite).sum()),
                "index": "global training sample index (cropseg.nn.dataset): patch position in train.txt "
                         "* sub-patches per patch + sub_y * sub_x_count + sub_x",
                "holdout_model_sha256": sha256_of(holdout_model),
                "train_list_sha256": sha256_of(split_dir / "train.txt"),
                "precision": precision.name}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    mean = float(losses[finite].mean()) if finite.any() else float("nan")
    return IrreducibleSummary(int(losses.size), int((~finite).sum()), mean, time.perf_counter() - started)
