"""The table of runs: one row per experiment of a grid, everything the report is computed from.

``metrics/comparison/runs.csv`` is this table, committed: every number of the report can be
recomputed from it (``python experiments/report.py --runs metrics/comparison/runs.csv``), without
DVC or the experiments' commits. A row holds the run's regime, method and replicate, the params
that make them, its costs (samples seen, forward passes, wall time, and those of the
irreducible-loss model it used), its final and area-under-curve test F1 and its whole learning
curve on the regime's grid (``wf1@N`` / ``mf1@N``: weighted / macro F1 at N samples seen).

Regimes and methods are named after ``experiments/regimes.yaml`` when a run's params match one
(the most specific method wins: ``uniform`` also matches the train + holdout baseline), else by a
label built from the params.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..evaluate.curve_area import auc
from ..selection.method import parse_method
from .experiments import Experiment, ReportError
from .statistics import on_grid

#: The params that tell runs apart inside a regime (method and replicate); every other param is the regime's.
METHOD_KEYS = ("selection.method", "selection.block_size", "selection.drop_irreducible", "protocol.train_on_holdout")
REPLICATE_KEYS = ("data.synthetic.seed", "split.seed", "protocol.noise_seed", "holdout.seed", "train.seed")
IGNORED_PREFIXES = ("tracking.",)
#: Params written to runs.csv beside the results.
PARAM_COLUMNS = (*METHOD_KEYS, *REPLICATE_KEYS, "protocol.label_noise", "protocol.noise_unit",
                 "protocol.noise_classes", "protocol.noisy_val", "protocol.samples_seen", "protocol.test_points",
                 "data.synthetic.patches", "data.synthetic.redundancy", "split.rules", "model.width", "model.depth")
#: Scores that need a forward pass of the target model over every sample considered.
MODEL_SCORES = {"loss", "margin", "rho_loss"}
Namer = Callable[[dict[str, Any]], str | None]


def regime_key(params: dict[str, Any]) -> str:
    """What every run of a regime shares: all params but the method's, the replicate's and tracking."""
    kept = {k: v for k, v in sorted(params.items())
            if k not in METHOD_KEYS and k not in REPLICATE_KEYS and not k.startswith(IGNORED_PREFIXES)}
    return repr(kept)


def regime_label(params: dict[str, Any]) -> str:
    """A short human name of a regime from its params (noise, holdout)."""
    noise = params.get("protocol.label_noise", 0) or 0
    if not noise:
        return "no noise"
    unit = params.get("protocol.noise_unit", "sample")
    kind = f"{unit} noise {noise:.0%}" + (" (similar crops)" if params.get("protocol.noise_classes") == "similar" else "")
    return kind + (", noisy holdout" if params.get("protocol.noisy_val") else ", clean holdout")


def method_label(params: dict[str, Any]) -> str:
    """A short human name of a method from its params."""
    method, block = str(params.get("selection.method")), int(params.get("selection.block_size", 1))
    name = "uniform" if method == "uniform" or block == 1 and method == "random" else f"{method} (block {block})"
    if params.get("protocol.train_on_holdout"):
        name += " on train + holdout"
    drop = params.get("selection.drop_irreducible") or 0
    return f"IL filter {drop:.0%} + {name}" if drop else name


def config_namers(config: dict) -> tuple[Namer, Namer]:
    """(regime namer, method namer) from experiments/regimes.yaml (``base``, ``regimes``, ``methods``, ``tiny``)."""
    def same(params: dict[str, Any], wanted: dict[str, Any]) -> bool:
        return all(_text(params.get(k)) == _text(v) for k, v in wanted.items())

    regimes = {name: {**config.get("base", {}), **spec["params"]} for name, spec in config.get("regimes", {}).items()}
    if "tiny" in config:
        regimes["tiny"] = config["tiny"]["params"]
    methods = config.get("methods", {})

    def regime(params: dict[str, Any]) -> str | None:
        return next((name for name, wanted in regimes.items() if same(params, wanted)), None)

    def method(params: dict[str, Any]) -> str | None:
        matching = [(len(wanted), name) for name, wanted in methods.items() if same(params, wanted)
                    and same(params, {k: v for k, v in _method_defaults().items() if k not in wanted})]
        return max(matching)[1] if matching else None

    return regime, method


def _method_defaults() -> dict[str, Any]:
    """Method params a method that does not set them must have at their defaults (so ``uniform``
    does not match a run trained on train + holdout)."""
    return {"selection.drop_irreducible": 0.0, "protocol.train_on_holdout": False}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(value)
    return "null" if value is None else str(value)


def uses_model_scores(method: str) -> bool:
    terms = parse_method(method)
    return bool(terms and MODEL_SCORES & set(terms))


def uses_il(params: dict[str, Any]) -> bool:
    terms = parse_method(str(params.get("selection.method")))
    return bool(terms and {"irreducible", "rho_loss"} & set(terms)) or bool(params.get("selection.drop_irreducible"))


def _grid(params: dict[str, Any], experiment: Experiment) -> np.ndarray:
    budget, points = params.get("protocol.samples_seen"), params.get("protocol.test_points")
    if budget and points:
        return np.array(sorted({max(1, round(budget * k / points)) for k in range(1, points + 1)}), dtype=np.float64)
    return np.asarray(experiment.curve.samples_seen, dtype=np.float64)


def run_row(e: Experiment, regime: str, method: str) -> dict[str, Any]:
    """The runs.csv row of one experiment."""
    p = e.params
    grid = _grid(p, e)
    wf1 = on_grid(e.curve.samples_seen.to_numpy(), e.curve.weighted_f1.to_numpy(), grid)
    mf1 = on_grid(e.curve.samples_seen.to_numpy(), e.curve.macro_f1.to_numpy(), grid)
    seen = int(e.train_cost.get("samples_seen", e.train.get("samples_seen", 0)))
    considered = int(e.train_cost.get("samples_considered", e.train.get("samples_considered", 0)))
    method_name = str(p["selection.method"])
    forwards = seen + (considered if uses_model_scores(method_name) else 0)
    il = uses_il(p)
    train_samples = int(e.train.get("train_samples", 0))
    drop = float(p.get("selection.drop_irreducible") or 0)
    il_pass = round(train_samples / (1 - drop)) if il else 0  # the IL model's one pass over the train split
    holdout_seen = int(e.holdout_cost.get("samples_seen", 0)) if il else 0
    il_model = e.evaluate.get("holdout_model") or {}
    row = {"regime": regime, "regime_label": regime_label(p), "method": method, "method_label": method_label(p),
           "replicate": int(p.get("train.seed", 0)), "experiment": e.name, "rev": e.rev,
           **{key: p.get(key) for key in PARAM_COLUMNS},
           "train_samples": train_samples, "samples_seen": seen, "samples_considered": considered,
           "forward_passes": forwards, "train_wall_s": float(e.train_cost.get("wall_time_s", math.nan)),
           "uses_il_model": il, "il_forward_passes": holdout_seen + il_pass,
           "il_wall_s": float(e.holdout_cost.get("wall_time_s", math.nan)) if il else 0.0,
           "il_model_weighted_f1": il_model.get("weighted_f1", math.nan),
           "il_model_macro_f1": il_model.get("macro_f1", math.nan),
           "noisy_share_selected": (e.train.get("selection") or {}).get("noisy_share_selected", math.nan),
           "auc_weighted_f1": auc(grid, wf1), "auc_macro_f1": auc(grid, mf1),
           "final_weighted_f1": float(wf1[-1]), "final_macro_f1": float(mf1[-1])}
    row |= {f"wf1@{int(g)}": float(v) for g, v in zip(grid, wf1)}
    row |= {f"mf1@{int(g)}": float(v) for g, v in zip(grid, mf1)}
    return row


def runs_table(experiments: list[Experiment], *, regime_name: Namer | None = None,
               method_name: Namer | None = None) -> pd.DataFrame:
    """One row per experiment, sorted by regime, method and replicate."""
    if not experiments:
        raise ReportError("no experiment with a learning curve (queue a grid: experiments/grid.py)")
    keys: dict[str, str] = {}
    rows = []
    for e in experiments:
        key = regime_key(e.params)
        regime = (regime_name(e.params) if regime_name else None) or keys.setdefault(key, regime_label(e.params))
        method = (method_name(e.params) if method_name else None) or method_label(e.params)
        rows.append(run_row(e, regime, method))
    table = pd.DataFrame(rows)
    duplicated = table.duplicated(["regime", "method", "replicate"], keep=False)
    if duplicated.any():
        twice = table[duplicated][["regime", "method", "replicate", "experiment"]].to_string(index=False)
        raise ReportError(f"runs of the same regime, method and replicate (queued twice? `dvc exp remove` one):\n{twice}")
    return table.sort_values(["regime", "method", "replicate"], kind="stable").reset_index(drop=True)


def curves(table: pd.DataFrame, metric: str = "wf1") -> tuple[np.ndarray, np.ndarray]:
    """``(grid, values)`` of the ``wf1@N`` (or ``mf1@N``) columns of a table of one regime."""
    columns = [c for c in table.columns if c.startswith(f"{metric}@") and table[c].notna().any()]
    grid = np.array([float(c.split("@")[1]) for c in columns])
    order = np.argsort(grid)
    return grid[order], table[[columns[i] for i in order]].to_numpy(np.float64)


def write_runs(table: pd.DataFrame, path: Path) -> None:
    table.to_csv(path, index=False)  # full precision: the report rebuilt from it is the same to the last digit


def read_runs(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise ReportError(f"{path}: no runs table (build it from the experiments: python experiments/report.py)")
    text = {c: str for c in ("regime", "regime_label", "method", "method_label", "experiment", "rev")}
    return pd.read_csv(path, dtype=text)
