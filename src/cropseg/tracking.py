"""Experiment tracking: DVCLive for ``dvc exp show`` / ``dvc plots``, mirrored to Weights & Biases.

DVCLive writes under the stage's metrics folder with ``dvcyaml=False`` (metrics and plots are
declared in dvc.yaml by hand: DVCLive's default rewrites dvc.yaml). Besides DVCLive's own
per-metric TSVs, every logged row also goes to a CSV with the cost counters as columns
(``samples_seen``, ``samples_considered``, ``pixels_seen``), so that ``dvc plots`` can draw any
metric against samples seen as well as against steps. W&B is optional and never blocks: offline by
default, online only when ``WANDB_API_KEY`` is set, disabled on demand or when not rank 0.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml

COUNTERS = ("step", "epoch", "samples_seen", "samples_considered", "pixels_seen")


def git_revision(cwd: str | Path = ".") -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def dvc_input_md5s(stage: str, lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """md5 of each dependency of ``stage`` as recorded in dvc.lock (empty when not locked yet)."""
    path = Path(lock_path)
    if not path.exists():
        return {}
    lock = yaml.safe_load(path.read_text()) or {}
    deps = lock.get("stages", {}).get(stage, {}).get("deps", [])
    return {d["path"]: d.get("md5", "") for d in deps if "path" in d}


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
                 rank: int = 0):
        self.enabled = rank == 0
        self.dir = Path(metrics_dir)
        self.live = None
        self.wandb = None
        if not self.enabled:
            return
        from dvclive import Live

        resume = resume_step is not None
        if not resume and self.dir.exists():
            for stale in ("steps.csv", "val.csv"):
                (self.dir / stale).unlink(missing_ok=True)
        self.live = Live(str(self.dir), resume=resume, report=None, save_dvc_exp=False, dvcyaml=False)
        self.steps = CsvLog(self.dir / "steps.csv", list(COUNTERS) + step_columns)
        self.val = CsvLog(self.dir / "val.csv", list(COUNTERS) + val_columns)
        if resume:
            self.steps.truncate_after(resume_step)
            self.val.truncate_after(resume_step)
            self._truncate_live_plots(resume_step)
        self.wandb = _start_wandb(wandb_mode, project, stage, config)

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
        self.live.step = counters["step"]
        for name, value in metrics.items():
            self.live.log_metric(f"{kind}/{name}" if kind != "steps" else f"train/{name}", float(value))
        for name in ("samples_seen", "samples_considered", "pixels_seen"):
            self.live.log_metric(name, int(counters[name]))
        (self.steps if kind == "steps" else self.val).append({**counters, **metrics})
        if self.wandb is not None:
            self.wandb.log({**{f"{kind}/{k}": v for k, v in metrics.items()}, **counters}, step=counters["step"])

    def summary(self, values: dict[str, float]) -> None:
        """Values that belong in metrics.json but not in the curves (best epoch, final test...)."""
        if not self.enabled:
            return
        for name, value in values.items():
            self.live.log_metric(name, value, plot=False)
        if self.wandb is not None:
            self.wandb.summary.update(values)

    def flush(self) -> None:
        if self.enabled:
            self.live.make_summary()

    def log_model(self, path: Path, name: str) -> None:
        if self.wandb is not None:
            import wandb

            artifact = wandb.Artifact(name, type="model")
            artifact.add_file(str(path))
            self.wandb.log_artifact(artifact)

    def close(self) -> None:
        if not self.enabled:
            return
        self.live.end()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(mode: str, project: str, stage: str, config: dict):
    """A W&B run mirroring this one, or None. ``WANDB_MODE`` in the environment wins over params."""
    mode = os.environ.get("WANDB_MODE", mode)
    if mode == "disabled":
        return None
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        print("tracking: tracking.wandb is online but WANDB_API_KEY is not set; logging offline instead")
        mode = "offline"
    # an absolute WANDB_DIR, so that runs of queued experiments (in temp copies) are kept
    wandb_dir = Path(os.environ.get("WANDB_DIR", Path.cwd() / "wandb")).absolute()
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ["WANDB_DIR"] = str(wandb_dir)
    try:
        import wandb

        return wandb.init(project=project, mode=mode, dir=str(wandb_dir), job_type=stage,
                          name=os.environ.get("DVC_EXP_NAME") or None, config=config, reinit="finish_previous",
                          settings=wandb.Settings(silent=True, x_disable_stats=True))
    except Exception as error:  # tracking must never stop training
        print(f"tracking: W&B disabled for this run ({type(error).__name__}: {error})")
        return None


def config_digest(config: dict[str, Any]) -> str:
    """Stable digest of a JSON-able config: a checkpoint resumes only under the same digest."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
