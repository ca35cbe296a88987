"""W&B runs of the stages that score rather than train: ``irreducible_loss`` and ``evaluate``.

Each is one W&B run in the experiment's group (:mod:`cropseg.tracking.wandb_run`), started after the
stage wrote its outputs, so that the test metrics of an experiment sit beside its training
curves: the params of the stage's sections, the DVC md5 of what it read, and its outputs as
artifacts; ``evaluate`` also logs its metrics (summary), the per-class table and its PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.params import Params, flatten
from .wandb_run import StageRun


def _sections(params: Params, keys: dict[str, Any]) -> dict[str, Any]:
    return {name: (value.model_dump() if hasattr(value, "model_dump") else value) for name, value in keys.items()}


def track_irreducible(params: Params, *, holdout_model: Path, medians: Path, split_dir: Path, out: Path,
                      summary: Any) -> None:
    """The irreducible_loss stage's run: params, inputs, the stored losses as an artifact.

    Args:
        params: the whole params; the loader, loss and some train entries are recorded.
        holdout_model: the model trained on the holdout split (an input).
        medians: the medians store (an input).
        split_dir: the split folder; its ``train.txt`` is an input.
        out: the stored losses (the artifact).
        summary: the stage's summary (``samples``, ``without_parcels``, ``mean_loss``, ``seconds``).
    """
    train = params.train
    run = StageRun("irreducible_loss", params.tracking.wandb, params.tracking.project,
                   params=_sections(params, {"loader": params.loader, "loss": params.loss,
                                             "train.precision": train.precision,
                                             "train.physical_batch_size": train.physical_batch_size,
                                             "train.device": train.device}),
                   inputs={str(holdout_model): holdout_model, str(medians): medians,
                           str(split_dir / "train.txt"): split_dir / "train.txt"})
    run.summary({"samples": summary.samples, "without_parcels": summary.without_parcels,
                 "mean_loss": summary.mean_loss, "seconds": summary.seconds})
    run.outputs({"losses": out})
    run.finish()


def track_evaluate(params: Params, paths: Any, result: Any) -> None:
    """The evaluate stage's run: test metrics as summary, per-class table, PNGs, the folder as an artifact.

    Args:
        params: the whole params; labels, loader and some train entries are recorded.
        paths: the stage's :class:`cropseg.evaluate.stage.EvaluatePaths` (inputs and ``out``).
        result: the stage's summary (its ``seconds`` joins the run summary).
    """
    labels = Path("configs/labels") / f"{params.labels}.yaml"
    run = StageRun("evaluate", params.tracking.wandb, params.tracking.project,
                   params=_sections(params, {"labels": params.labels, "loader": params.loader,
                                             "train.device": params.train.device,
                                             "train.precision": params.train.precision}),
                   inputs={str(paths.model): paths.model, str(paths.medians): paths.medians,
                           str(paths.split): paths.split, str(paths.patches): paths.patches, str(labels): labels})
    if run.run is None:
        return
    out = Path(paths.out)
    metrics = json.loads((out / "metrics.json").read_text())
    run.summary(flatten(metrics, "/") | {"seconds": result.seconds})
    if (out / "per_class.csv").exists():
        import pandas as pd

        run.table("per_class", pd.read_csv(out / "per_class.csv"))
    run.images({name: out / f"{name}.png" for name in ("confusion", "per_class_f1", "previews")})
    run.outputs({"metrics": out})
    run.finish()
