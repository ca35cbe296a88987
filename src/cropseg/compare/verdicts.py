"""What a regime's runs say: every method against uniform and against the best equal-information baseline.

A regime's runs (rows of :mod:`cropseg.compare.runs`) are paired by replicate. For every method:
replicate means, the paired differences to ``uniform`` (area under the test weighted-F1 curve,
final weighted and macro F1) with t intervals and exact sign-flip p-values
(:mod:`cropseg.compare.statistics`), and speed-ups in five cost units. For every method that
uses the irreducible-loss (IL) model, the same differences to the **best equal-information
baseline**: of the baselines that get what RHO-Loss gets from the holdout (uniform on train +
holdout, the IL filter, selection by irreducible loss alone), the one with the highest mean AUC,
and the final F1 difference to the IL model itself. The primary comparisons (RHO-Loss's AUC against
uniform and against the best baseline) are Holm-corrected within the regime; a difference is called
a gain (or a loss) only where its interval excludes 0 *and* its Holm-adjusted p is below 0.05.
Where the replicates are too few for that to be possible at all (Holm applied to the exact test's
smallest p of every comparison is not below 0.05: 5 replicates and 2 tests), the verdict says
*undecidable*, not "no significant difference", which would read as evidence of no effect.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .runs import curves
from .statistics import Paired, holm, paired, smallest_p, speedup

REFERENCE = "uniform"
ALPHA = 0.05
#: Cost units of the speed-ups: (key, title, rate column or None for samples seen, IL cost column or None).
UNITS = (("seen", "samples seen", None, None), ("forward", "forward passes", "forward_passes", None),
         ("wall", "wall time", "train_wall_s", None),
         ("forward_il", "forward passes + IL model", "forward_passes", "il_forward_passes"),
         ("wall_il", "wall time + IL model", "train_wall_s", "il_wall_s"))
METRICS = (("auc", "auc_weighted_f1"), ("final", "final_weighted_f1"), ("final_macro", "final_macro_f1"))


@dataclass
class MethodResult:
    """One method of a regime: means over replicates, paired comparisons and speed-ups."""

    name: str
    label: str
    replicates: list[int]
    means: dict[str, float]
    speedups: dict[str, float]
    baseline: bool
    uses_il: bool
    vs_uniform: dict[str, Paired] = field(default_factory=dict)
    vs_best: dict[str, Paired] = field(default_factory=dict)
    vs_il_model: Paired | None = None
    holm: dict[str, float] = field(default_factory=dict)  # "vs_uniform.auc" -> adjusted p
    floor: dict[str, float] = field(default_factory=dict)  # "vs_uniform.auc" -> smallest adjusted p reachable

    def as_dict(self) -> dict[str, Any]:
        def paired_dict(value: Paired) -> dict[str, float]:
            return {"mean": value.mean, "low": value.low, "high": value.high, "p": value.p, "n": value.n}

        return {"method": self.name, "label": self.label, "replicates": self.replicates, "means": self.means,
                "speedups": self.speedups, "baseline": self.baseline, "uses_il_model": self.uses_il,
                "vs_uniform": {k: paired_dict(v) for k, v in self.vs_uniform.items()},
                "vs_best_baseline": {k: paired_dict(v) for k, v in self.vs_best.items()},
                "vs_il_model": paired_dict(self.vs_il_model) if self.vs_il_model else None, "holm": self.holm,
                "holm_floor": self.floor}


@dataclass
class RegimeResult:
    name: str
    label: str
    grid: np.ndarray
    methods: list[MethodResult]
    best_baseline: str | None
    il_model: dict[str, float]
    curves: dict[str, np.ndarray]  # method -> (replicates, points) weighted F1
    family: int = 0  # primary comparisons, Holm-corrected together

    def method(self, name: str) -> MethodResult:
        return next(m for m in self.methods if m.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {"regime": self.name, "label": self.label, "grid": self.grid.tolist(), "best_baseline": self.best_baseline,
                "il_model": self.il_model, "primary_family": self.family, "methods": [m.as_dict() for m in self.methods]}


def is_baseline(run: pd.Series) -> bool:
    """An equal-information baseline: uses the holdout's labels or the IL model, but not RHO-Loss's score."""
    method = str(run["selection.method"])
    return bool(run["protocol.train_on_holdout"]) or float(run["selection.drop_irreducible"] or 0) > 0 \
        or method == "irreducible"


def judge(p: Paired, adjusted: float, floor: float = 0.0) -> str:
    """``gain``, ``loss``, ``no significant difference``, ``undecidable`` (``floor``, the smallest
    p_Holm these replicates can give, is not below ALPHA) or ``not tested``."""
    if p.n < 2 or math.isnan(adjusted):
        return "not tested"
    if floor >= ALPHA:
        return "undecidable"
    if p.excludes_zero and adjusted < ALPHA:
        return "gain" if p.mean > 0 else "loss"
    return "no significant difference"


def regime_result(name: str, table: pd.DataFrame) -> RegimeResult:
    """Everything the report says about one regime's runs (``table``: its rows of runs.csv)."""
    by_method = {m: g.set_index("replicate").sort_index() for m, g in table.groupby("method", sort=False)}
    if REFERENCE not in by_method:
        raise ValueError(f"regime {name}: no {REFERENCE} runs to compare with (methods: {', '.join(by_method)})")
    reference = by_method[REFERENCE]
    grid_of = {m: curves(g) for m, g in by_method.items()}
    grid = grid_of[REFERENCE][0]
    curve_of = {m: values for m, (_, values) in grid_of.items()}
    reference_curve = curve_of[REFERENCE].mean(0)
    reference_rates = {unit: _cost_rate(reference, column) for unit, _, column, _ in UNITS}
    results = []
    for method, runs in by_method.items():
        first = runs.iloc[0]
        means = {key: float(runs[column].mean()) for key, column in METRICS}
        means |= {"auc_macro": float(runs["auc_macro_f1"].mean()),
                  "noisy_share_selected": float(runs["noisy_share_selected"].mean()),
                  "forward_passes": float(runs["forward_passes"].mean()), "train_wall_s": float(runs["train_wall_s"].mean())}
        speedups = {}
        for unit, _, rate_column, il_column in UNITS:
            fixed = float(runs[il_column].mean()) if il_column else 0.0
            speedups[unit] = speedup(grid, reference_curve, curve_of[method].mean(0),
                                     reference_rate=reference_rates[unit], method_rate=_cost_rate(runs, rate_column),
                                     method_fixed=fixed)
        results.append(MethodResult(method, str(first["method_label"]), runs.index.tolist(), means, speedups,
                                    is_baseline(first), bool(first["uses_il_model"])))
    results.sort(key=lambda m: (m.name != REFERENCE, not m.baseline, m.name))  # uniform, baselines, selection
    baselines = [m for m in results if m.baseline]
    best = max(baselines, key=lambda m: m.means["auc"]).name if baselines else None
    il_model = {"weighted_f1": float(table["il_model_weighted_f1"].mean()),
                "macro_f1": float(table["il_model_macro_f1"].mean())}
    for result in results:
        runs = by_method[result.name]
        if result.name != REFERENCE:
            result.vs_uniform = _compare(runs, reference)
        if result.uses_il and not result.baseline and best is not None:
            result.vs_best = _compare(runs, by_method[best])
            result.vs_il_model = paired(runs["final_weighted_f1"].to_numpy(), runs["il_model_weighted_f1"].to_numpy())
    family = _holm(results)
    label = str(table["regime_label"].iloc[0])
    return RegimeResult(name, label, grid, results, best, il_model, curve_of, family)


def _cost_rate(runs: pd.DataFrame, column: str | None) -> float:
    """Mean cost per sample seen in a unit (``column`` of runs.csv; None: samples seen themselves, 1)."""
    return 1.0 if column is None else float(runs[column].mean() / runs["samples_seen"].mean())


def _compare(runs: pd.DataFrame, other: pd.DataFrame) -> dict[str, Paired]:
    both = runs.index.intersection(other.index)
    return {key: paired(runs.loc[both, column].to_numpy(), other.loc[both, column].to_numpy()) for key, column in METRICS}


def _holm(results: list[MethodResult]) -> int:
    """Holm over the regime's primary family, written back as ``holm["vs_uniform.auc"]`` / ``["vs_best.auc"]``,
    and the smallest adjusted p each comparison could reach (``floor``, same keys): Holm over every
    comparison's smallest exact p (all pairs one sign), exact because Holm never falls when a p
    rises, and right when comparisons have different numbers of pairs (a missing run). Returns the
    family's size.

    The family: the AUC difference of every method that uses the IL model's scores (RHO-Loss) to
    uniform and to the best equal-information baseline. The other p-values (final F1, the baselines
    against uniform, the IL model) are secondary and shown unadjusted: with 8 replicates the smallest
    exact p is 2/256, so a family much larger than 6 could never reach 0.05 after correction."""
    tests = [(m, f"{kind}.auc", values["auc"]) for m in results if m.vs_best
             for kind, values in (("vs_uniform", m.vs_uniform), ("vs_best", m.vs_best))]
    adjusted = holm([value.p for _, _, value in tests])
    floors = holm([math.nan if math.isnan(value.p) else smallest_p(value.n) for _, _, value in tests])
    for (method, key, _), p, floor in zip(tests, adjusted, floors):
        method.holm[key], method.floor[key] = p, floor
    return sum(not math.isnan(value.p) for _, _, value in tests)


def build(table: pd.DataFrame) -> list[RegimeResult]:
    """Every regime of a runs table, in the table's order of first appearance."""
    return [regime_result(name, group) for name, group in table.groupby("regime", sort=False)]
