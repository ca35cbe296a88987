"""Score the train stage's snapshots (and the irreducible-loss model) on the test split.

Each snapshot (:mod:`cropseg.nn.snapshots`) is run over the test sub-patches and scored against the
synthetic generator's clean labels where they exist (``against: clean``), else against the labels
(``against: labels``, e.g. on the real S4A). The curve's area (:func:`cropseg.evaluate.curve_area.auc`)
and last point are DVC metrics; the points are ``metrics/evaluate/curve.csv`` (a DVC plot). The
irreducible-loss model is scored the same way: an IL model that has not learnt the classes ranks
samples by their noise and by nothing else, so its own clean-test F1 belongs in every comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from ..nn.checkpoint import load_model
from ..nn.dataset import SubPatchDataset
from ..nn.metrics import ConfusionMatrix
from ..nn.precision import Precision
from ..nn.scoring import predict, sequential_loader
from ..nn.snapshots import read_index
from .curve_area import auc

CURVE_COLUMNS = ["point", "samples_seen", "step", "accuracy", "weighted_f1", "macro_f1"]


def score_model(model_path: Path, loader, n_classes: int, truth: Callable[[Any], torch.Tensor] | None, *,
                device: torch.device, precision: Precision) -> dict[str, float]:
    """accuracy / weighted_f1 / macro_f1 of one model file over ``loader``'s parcel pixels;
    ``truth(index)`` gives the labels to score against (default: the batch's own)."""
    model, _ = load_model(model_path, device)
    matrix = ConfusionMatrix(n_classes, device)
    for batch, log_probs in predict(model, loader, device, precision):
        matrix.update(log_probs.argmax(1), batch.y if truth is None else truth(batch.index).to(device))
    values = matrix.compute()
    return {k: float(values[k]) for k in ("accuracy", "weighted_f1", "macro_f1")}


def score_snapshots(folder: Path, dataset: SubPatchDataset, truth: Callable[[Any], torch.Tensor] | None, *,
                    device: torch.device, precision: Precision, batch_size: int, workers: int = 0,
                    progress: bool = True) -> pd.DataFrame:
    """One row per snapshot of ``folder`` (``CURVE_COLUMNS``), scored as :func:`score_model` does."""
    loader = sequential_loader(dataset, batch_size, workers=workers, pin_memory=device.type == "cuda")
    rows = []
    for entry in tqdm(read_index(folder), desc="learning curve", unit="snapshot", disable=not progress, leave=False):
        scores = score_model(Path(folder) / entry["file"], loader, dataset.label_set.n_classes, truth,
                             device=device, precision=precision)
        rows.append({"point": entry["point"], "samples_seen": entry["samples_seen"], "step": entry["step"], **scores})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def curve_metrics(curve: pd.DataFrame, against: str) -> dict[str, Any]:
    """The ``curve`` block of metrics.json: area, last point, number of points, what was scored."""
    return {"auc_weighted_f1": auc(curve.samples_seen.to_numpy(), curve.weighted_f1.to_numpy()),
            "final_weighted_f1": float(curve.weighted_f1.iloc[-1]),
            "final_macro_f1": float(curve.macro_f1.iloc[-1]),
            "samples_seen": int(curve.samples_seen.iloc[-1]), "points": int(len(curve)), "against": against}
