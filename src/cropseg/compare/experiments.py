"""Finished comparison experiments, read from ``dvc exp show --json`` and their own commits.

Every DVC experiment of a grid (``experiments/grid.py``) is one (regime, method, replicate) run.
Params and metrics (metrics.json, cost.json of the training stages) come from the JSON of
``dvc exp show --json``; the learning curve from the experiment's commit (``git show
<rev>:metrics/evaluate/curve.csv``: DVC leaves lists out of the metrics it shows). This module
only reads; :mod:`cropseg.compare.runs` turns the experiments into the table of runs.
"""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.params import flatten

CURVE_FILE = "metrics/evaluate/curve.csv"
EVALUATE_METRICS = "metrics/evaluate/metrics.json"
TRAIN_METRICS = "metrics/train/metrics.json"
TRAIN_COST = "metrics/train/cost.json"
HOLDOUT_METRICS = "metrics/holdout/metrics.json"
HOLDOUT_COST = "metrics/holdout/cost.json"


class ReportError(ValueError):
    """The experiments do not make a comparison (no uniform, no snapshots, unreadable JSON...)."""


@dataclass
class Experiment:
    """One finished experiment: its params (dotted keys), metrics, costs and test learning curve."""

    name: str
    rev: str
    params: dict[str, Any]
    evaluate: dict[str, Any]
    train: dict[str, Any]
    holdout: dict[str, Any]
    train_cost: dict[str, Any]
    holdout_cost: dict[str, Any]
    curve: pd.DataFrame


def _revisions(show: list[dict[str, Any]]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(name, executor state, rev entry) of every experiment in ``dvc exp show --json`` output
    (baselines left out; ``done`` for experiments saved without a queue)."""
    for baseline in show:
        for experiment in baseline.get("experiments") or []:
            state = ((experiment.get("executor") or {}).get("state") or "done").lower()
            for entry in experiment.get("revs") or []:
                if entry.get("data") and not entry.get("error"):
                    yield entry.get("name") or experiment.get("name") or entry["rev"][:7], state, entry


def _metrics(data: dict[str, Any], path: str) -> dict[str, Any]:
    return ((data.get("metrics") or {}).get(path) or {}).get("data") or {}


def git_curve(rev: str, repo: Path = Path(".")) -> pd.DataFrame | None:
    """The learning curve committed in an experiment's revision (None if it has none)."""
    done = subprocess.run(["git", "show", f"{rev}:{CURVE_FILE}"], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return None
    curve = pd.read_csv(io.StringIO(done.stdout))
    return curve if len(curve) else None


def read_experiments(show: list[dict[str, Any]], repo: Path = Path(".")) -> tuple[list[Experiment], list[str]]:
    """Finished experiments with a learning curve, and those left out (and why): queued and running
    ones are counted in one line, failed ones named."""
    experiments, skipped, pending = [], [], 0
    for name, state, entry in _revisions(show):
        if state in ("queued", "running"):
            pending += 1
            continue
        if state == "failed":
            skipped.append(f"{name}: failed (`dvc queue logs {name}`)")
            continue
        data = entry["data"]
        params = flatten((data.get("params") or {}).get("params.yaml", {}).get("data") or {})
        if "selection.method" not in params:
            skipped.append(f"{name}: no params.yaml params")
            continue
        curve = git_curve(entry["rev"], repo)
        if curve is None:
            skipped.append(f"{name}: no learning curve in {CURVE_FILE} (protocol.test_points is 0?)")
            continue
        experiments.append(Experiment(name, entry["rev"], params, _metrics(data, EVALUATE_METRICS),
                                      _metrics(data, TRAIN_METRICS), _metrics(data, HOLDOUT_METRICS),
                                      _metrics(data, TRAIN_COST), _metrics(data, HOLDOUT_COST), curve))
    if pending:
        skipped.append(f"{pending} experiment(s) queued or running, not finished yet")
    return experiments, skipped


def exp_show_json(repo: Path = Path("."), revs: list[str] | None = None) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of the experiments derived from ``revs`` (default: HEAD)."""
    command = ["dvc", "exp", "show", "--json", *[arg for rev in revs or [] for arg in ("--rev", rev)]]
    done = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise ReportError(f"dvc exp show --json failed: {done.stderr.strip()}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as error:
        raise ReportError(f"dvc exp show --json printed no JSON ({error}): {done.stdout[:200]!r}") from None
