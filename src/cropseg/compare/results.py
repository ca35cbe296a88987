"""The results of a selection-method grid, read from ``dvc exp show --json`` and summarised per regime.

Every DVC experiment is one (regime, method, block size, seed) point. The experiments are read
from the JSON of ``dvc exp show --json`` (params and metrics) and each one's learning curve
from its own commit (``git show <rev>:metrics/evaluate/curve.csv``: DVC leaves lists out of
the metrics it shows). They are grouped into *regimes* (every param but the method, the block
size and the seed), paired by ``train.seed`` with uniform (and with ``loss`` at the same block
size) and summarised with paired-bootstrap intervals (:mod:`cropseg.compare.statistics`). A method is
called better only where the interval of its paired difference excludes 0. This module writes
nothing: :mod:`cropseg.compare.report` writes the report of the regimes built here.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.params import flatten
from ..evaluate.curve_area import auc
from .statistics import Interval, on_grid, paired_bootstrap, speedup

CURVE_FILE = "metrics/evaluate/curve.csv"
EVALUATE_METRICS = "metrics/evaluate/metrics.json"
TRAIN_METRICS = "metrics/train/metrics.json"
HOLDOUT_METRICS = "metrics/holdout/metrics.json"
#: params that make the points of one regime differ; everything else must be equal
VARIED = ("selection.method", "selection.block_size", "train.seed")
IGNORED_PREFIXES = ("tracking.",)


class ReportError(ValueError):
    """The experiments do not make a comparison (no uniform, no snapshots, unreadable JSON...)."""


@dataclass
class Experiment:
    """One finished experiment: its params (dotted keys), metrics and test learning curve."""

    name: str
    rev: str
    params: dict[str, Any]
    evaluate: dict[str, Any]
    train: dict[str, Any]
    holdout: dict[str, Any]
    curve: pd.DataFrame

    @property
    def method(self) -> str:
        return str(self.params["selection.method"])

    @property
    def block(self) -> int:
        return 1 if self.method == "uniform" else int(self.params["selection.block_size"])

    @property
    def seed(self) -> int:
        return int(self.params["train.seed"])


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
                                      _metrics(data, TRAIN_METRICS), _metrics(data, HOLDOUT_METRICS), curve))
    if pending:
        skipped.append(f"{pending} experiment(s) queued or running, not finished yet")
    return experiments, skipped


def regime_key(params: dict[str, Any]) -> str:
    """What every point of a regime shares: all params but the varied and ignored ones."""
    kept = {k: v for k, v in sorted(params.items()) if k not in VARIED and not k.startswith(IGNORED_PREFIXES)}
    return json.dumps(kept, sort_keys=True, default=str)


def regime_label(params: dict[str, Any]) -> str:
    """A short human name: noise, redundancy, budget."""
    noise = params.get("protocol.label_noise", 0)
    generator = params.get("data.synthetic.mislabelled", 0)
    parts = [f"per-sample noise {noise:.0%}" if noise else "no protocol noise"]
    if generator:
        parts.append(f"generator noise {generator:.0%} ({params.get('data.synthetic.mislabelled_unit')})")
    if params.get("data.synthetic.redundancy"):
        parts.append(f"redundancy {params['data.synthetic.redundancy']:.0%}")
    parts.append(f"budget {params.get('protocol.samples_seen')} samples seen")
    return ", ".join(parts)


@dataclass
class Row:
    """One (method, block size) of a regime, with its intervals (paired by seed)."""

    method: str
    block: int
    seeds: list[int]
    values: dict[str, Interval] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "block_size": self.block, "seeds": self.seeds,
                **{k: {"mean": v.value, "low": v.low, "high": v.high} for k, v in self.values.items()}}


@dataclass
class Regime:
    label: str
    params: dict[str, Any]
    grid: np.ndarray
    curves: dict[tuple[str, int], dict[int, np.ndarray]]  # (method, block) -> seed -> F1 on the grid
    rows: list[Row]
    holdout: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "grid": self.grid.tolist(), "holdout": self.holdout,
                "rows": [r.as_dict() for r in self.rows],
                "params": {k: v for k, v in self.params.items() if k not in VARIED}}


def _grid(params: dict[str, Any], experiments: list[Experiment]) -> np.ndarray:
    budget, points = params.get("protocol.samples_seen"), params.get("protocol.test_points")
    if budget and points:
        return np.array(sorted({max(1, round(budget * k / points)) for k in range(1, points + 1)}), dtype=np.float64)
    return np.asarray(experiments[0].curve.samples_seen, dtype=np.float64)


def summarise_regime(experiments: list[Experiment], *, replicates: int = 10_000) -> Regime:
    """Per (method, block): mean and paired-bootstrap interval of every statistic the report shows."""
    params = experiments[0].params
    grid = _grid(params, experiments)
    curves: dict[tuple[str, int], dict[int, np.ndarray]] = defaultdict(dict)
    finals: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    noisy: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    for e in experiments:
        key = (e.method, e.block)
        curves[key][e.seed] = on_grid(e.curve.samples_seen.to_numpy(), e.curve.weighted_f1.to_numpy(), grid)
        finals[key][e.seed] = float(e.curve.weighted_f1.iloc[-1])
        share = (e.train.get("selection") or {}).get("noisy_share_selected")
        noisy[key][e.seed] = float(share) if share is not None else math.nan
    uniform = next((k for k in curves if k[0] == "uniform"), None)
    if uniform is None:
        raise ReportError(f"regime '{regime_label(params)}' has no uniform experiment to compare with")
    rows = []
    for key in sorted(curves, key=lambda k: (k[0] != "uniform", k[1], k[0])):
        seeds = sorted(set(curves[key]) & set(curves[uniform]))
        if not seeds:
            continue
        loss = ("loss", key[1])
        loss_seeds = sorted(set(seeds) & set(curves.get(loss, {}))) if key[0] != "loss" else []
        rows.append(_row(key, seeds, loss_seeds, curves, finals, noisy, uniform, loss, grid, replicates))
    holdout = {"clean_test_weighted_f1": experiments[0].evaluate.get("holdout_model", {}).get("weighted_f1"),
               "scored_against": experiments[0].evaluate.get("holdout_model", {}).get("against"),
               # the holdout stage's DVCLive metrics sit under its stage name (cropseg.tracking.tracker)
               "holdout_samples": (experiments[0].holdout.get("holdout") or {}).get("train_samples")}
    return Regime(regime_label(params), params, grid, dict(curves), rows, holdout)


def _row(key, seeds, loss_seeds, curves, finals, noisy, uniform, loss, grid, replicates) -> Row:
    def stack(k, chosen):
        return np.stack([curves[k][s] for s in chosen])

    def vector(table, k, chosen):
        return np.array([table[k][s] for s in chosen])

    m_curves, u_curves = stack(key, seeds), stack(uniform, seeds)
    m_auc = np.array([auc(grid, c) for c in m_curves])
    u_auc = np.array([auc(grid, c) for c in u_curves])
    m_final, u_final = vector(finals, key, seeds), vector(finals, uniform, seeds)
    m_noisy, u_noisy = vector(noisy, key, seeds), vector(noisy, uniform, seeds)
    boot = lambda f: paired_bootstrap(f, len(seeds), replicates=replicates)  # noqa: E731
    row = Row(key[0], key[1], seeds)
    row.values["auc"] = boot(lambda i: m_auc[i].mean())
    row.values["final_f1"] = boot(lambda i: m_final[i].mean())
    row.values["noisy_share"] = boot(lambda i: m_noisy[i].mean())
    if key != uniform:
        row.values["auc_vs_uniform"] = boot(lambda i: (m_auc[i] - u_auc[i]).mean())
        row.values["final_f1_vs_uniform"] = boot(lambda i: (m_final[i] - u_final[i]).mean())
        row.values["noisy_share_vs_uniform"] = boot(lambda i: (m_noisy[i] - u_noisy[i]).mean())
        row.values["speedup"] = boot(lambda i: speedup(u_curves[i], m_curves[i], grid))
    if loss_seeds:
        position = [seeds.index(s) for s in loss_seeds]
        l_auc = np.array([auc(grid, curves[loss][s]) for s in loss_seeds])
        l_final, l_noisy = vector(finals, loss, loss_seeds), vector(noisy, loss, loss_seeds)
        mine = lambda values: values[position]  # noqa: E731
        lboot = lambda f: paired_bootstrap(f, len(loss_seeds), replicates=replicates)  # noqa: E731
        row.values["auc_vs_loss"] = lboot(lambda i: (mine(m_auc)[i] - l_auc[i]).mean())
        row.values["final_f1_vs_loss"] = lboot(lambda i: (mine(m_final)[i] - l_final[i]).mean())
        row.values["noisy_share_vs_loss"] = lboot(lambda i: (mine(m_noisy)[i] - l_noisy[i]).mean())
        row.values["noisy_share_ratio_to_loss"] = lboot(lambda i: mine(m_noisy)[i].mean() / l_noisy[i].mean())
    return row


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


def build_regimes(experiments: list[Experiment], *, replicates: int = 10_000) -> list[Regime]:
    groups: dict[str, list[Experiment]] = defaultdict(list)
    for e in experiments:
        groups[regime_key(e.params)].append(e)
    return [summarise_regime(group, replicates=replicates) for _, group in sorted(groups.items())]
