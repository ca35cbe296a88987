"""A training run's tracking (train, train_holdout): DVCLive metrics and plots, mirrored to W&B.

DVCLive writes under the stage's metrics folder with ``dvcyaml=False`` (metrics and plots are
declared in dvc.yaml by hand: DVCLive's default rewrites dvc.yaml). DVCLive gets only the
validation metrics people compare (:data:`COMPARED`) and the cost counters, so that
``metrics.json`` and ``dvc exp show`` stay small; every logged row, telemetry included, goes to a
CSV with the cost counters as columns (``samples_seen``, ``samples_considered``, ``pixels_seen``),
so that ``dvc plots`` can draw any metric against samples seen as well as against steps, and to
W&B (:mod:`cropseg.tracking.wandb_run`: one run per stage with its lineage; only rank 0 logs).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from .wandb_run import log_outputs, start_run

COUNTERS = ("step", "epoch", "samples_seen", "samples_considered", "pixels_seen")
# the metrics that go to metrics.json (``dvc exp show``): telemetry (lr, class shares, selection
# scores) stays in steps.csv / val.csv and W&B, so that the experiments table fits a screen
COMPARED = ("accuracy", "weighted_f1", "macro_f1", "crop5_accuracy", "crop5_weighted_f1", "crop5_macro_f1")
#: run-level numbers metrics.json keeps beside them: the kept model's epoch, the training samples
#: (of the holdout stage: the holdout size), the noisy shares of the whole run
SUMMARY_EXTRA = ("epoch", "train_samples", "noisy_share_selected", "noisy_share_block")


LOG_FILES = ("steps.csv", "val.csv", "metrics.json")
LOG_DIRS = ("plots",)


def clear_logs(metrics_dir: Path) -> None:
    """Start a fresh (non-resumed) run from an empty log folder.

    DVCLive rewrites the TSVs of the metrics it logs but leaves the others: a ``uniform`` run
    after a ``rho_loss`` one kept ``selection/score_*`` TSVs of the previous run, which then
    differed from what ``dvc exp apply`` restores, so ``dvc status`` reported the plots modified.
    """
    for name in LOG_FILES:
        (metrics_dir / name).unlink(missing_ok=True)
    for name in LOG_DIRS:
        shutil.rmtree(metrics_dir / name, ignore_errors=True)


class CsvLog:
    """Append-only CSV with a fixed header; truncated back to a step when a run resumes."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns

    def truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
        self._write(rows, "w")

    def append(self, row: dict[str, Any]) -> None:
        self._write([row], "a")

    def _write(self, rows: list[dict], mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = mode == "w" or not self.path.exists()
        with open(self.path, mode, newline="") as handle:
            writer = csv.DictWriter(handle, self.columns, extrasaction="ignore", lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows(rows)


class Tracker:
    """One run's loggers. Only rank 0 writes anything."""

    def __init__(self, metrics_dir: str | Path, *, stage: str, config: dict[str, Any], wandb_mode: str,
                 project: str, resume_step: int | None, step_columns: list[str], val_columns: list[str],
                 rank: int = 0, params: dict[str, Any] | None = None,
                 inputs: dict[str, str | Path | None] | None = None):
        self.enabled = rank == 0
        self.stage = stage
        # holdout's DVC metrics under `holdout.`: unique names keep `dvc exp show` headers short
        # (`best.weighted_f1`, not `metrics/train/metrics.json:best.weighted_f1`)
        self.prefix = "" if stage == "train" else f"{stage}/"
        self.dir = Path(metrics_dir)
        self.live = None
        self.wandb = None
        if not self.enabled:
            return
        from dvclive import Live

        resume = resume_step is not None
        if not resume:
            clear_logs(self.dir)
        self.live = Live(str(self.dir), resume=resume, report=None, save_dvc_exp=False, dvcyaml=False)
        self.steps = CsvLog(self.dir / "steps.csv", list(COUNTERS) + step_columns)
        self.val = CsvLog(self.dir / "val.csv", list(COUNTERS) + val_columns)
        if resume:
            self.steps.truncate_after(resume_step)
            self.val.truncate_after(resume_step)
            self._truncate_live_plots(resume_step)
        self.wandb = start_run(wandb_mode, project, stage, params=params or config.get("params", {}),
                               inputs=inputs or {}, extra=config)

    def _truncate_live_plots(self, step: int) -> None:
        """Drop DVCLive TSV rows logged after the checkpoint the run resumes from."""
        for tsv in (self.dir / "plots" / "metrics").rglob("*.tsv"):
            lines = tsv.read_text().splitlines()
            header = lines[0].split("\t") if lines else []
            if "step" not in header:
                continue
            column = header.index("step")
            kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[column]) <= step]
            tsv.write_text("\n".join(kept) + "\n")

    def log(self, kind: str, counters: dict[str, int], metrics: dict[str, float]) -> None:
        """Log one row of ``metrics`` (``kind`` = steps | val) with the cost counters."""
        if not self.enabled:
            return
        if kind == "val":  # DVC metrics: only what people compare; every column is in the CSVs and W&B
            self.live.step = counters["step"]
            for name, value in metrics.items():
                if name in COMPARED:
                    self.live.log_metric(f"{self.prefix}val/{name}", float(value))
            for name in COUNTERS[2:]:
                self.live.log_metric(f"{self.prefix}{name}", int(counters[name]))
        (self.steps if kind == "steps" else self.val).append({**counters, **metrics})
        if self.wandb is not None:
            self.wandb.log({**{f"{kind}/{k}": v for k, v in metrics.items()}, **counters}, step=counters["step"])

    def summary(self, values: dict[str, float]) -> None:
        """Values that belong in metrics.json but not in the curves (best epoch, final test...)."""
        if not self.enabled:
            return
        for name, value in values.items():
            if name.rsplit("/", 1)[-1] in COMPARED + SUMMARY_EXTRA:
                self.live.log_metric(f"{self.prefix}{name}", value, plot=False)
        if self.wandb is not None:
            self.wandb.summary.update(values)

    def flush(self) -> None:
        if self.enabled:
            self.live.make_summary()

    def log_outputs(self, outputs: dict[str, Path]) -> None:
        """The run's outputs as W&B artifacts (by reference to the DVC remote when there is one)."""
        if self.wandb is not None:
            try:
                log_outputs(self.wandb, self.stage, outputs)
            except Exception as error:  # tracking must never stop training
                print(f"tracking: outputs not logged to W&B ({type(error).__name__}: {error})")

    def close(self) -> None:
        if not self.enabled:
            return
        self.live.end()
        if self.wandb is not None:
            self.wandb.finish()


def config_digest(config: dict[str, Any]) -> str:
    """Stable digest of a JSON-able config: a checkpoint resumes only under the same digest."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
