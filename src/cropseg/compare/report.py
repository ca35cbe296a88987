"""Write a selection-method comparison: ``report.md``, ``runs.csv``, ``summary.json`` and PNGs per regime.

The report is built from the runs table alone (:mod:`cropseg.compare.runs`), which is written
beside it, so every number can be recomputed from ``runs.csv``. Figures are drawn on bare
:class:`matplotlib.figure.Figure` objects (no pyplot, no backend set at import): ``dvc plots
show`` HTML needs a CDN for vega, so the pictures are PNG.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from ..core.atomic import atomic_dir
from .runs import write_runs
from .statistics import Paired
from .verdicts import ALPHA, UNITS, MethodResult, RegimeResult, judge

RUNS_FILE = "runs.csv"


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _diff(value: Paired | None, adjusted: float | None) -> str:
    """``Δ [interval] p`` : Holm-adjusted p (``p_Holm``) for the primary comparisons, bold when judged a
    gain or a loss; the raw exact p (``p_raw``) for the secondary ones, never bold."""
    if value is None or value.n == 0:
        return ""
    if adjusted is None:
        return f"{value.text()} p_raw={_p(value.p)}"
    text = f"{value.text()} p_Holm={_p(adjusted)}"
    return f"**{text}**" if judge(value, adjusted) in ("gain", "loss") else text


def _p(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _speed(value: float) -> str:
    return "never" if value == 0 else f"{value:.2f}×"


def verdict_table(regime: RegimeResult) -> list[str]:
    """One row per method: means, differences to uniform and to the best baseline, speed-ups."""
    head = ["method", "n", "AUC wF1", "final wF1", "final macro F1", "Δ AUC vs uniform", "Δ final wF1 vs uniform",
            f"Δ AUC vs best baseline", "Δ final wF1 vs best baseline", *[f"speed-up ({title})" for _, title, _, _ in UNITS],
            "noisy share selected"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in regime.methods:
        cells = [m.label + (" *(baseline)*" if m.baseline else ""), str(len(m.replicates)), f"{m.means['auc']:.3f}",
                 f"{m.means['final']:.3f}", f"{m.means['final_macro']:.3f}",
                 _diff(m.vs_uniform.get("auc"), m.holm.get("vs_uniform.auc")),
                 _diff(m.vs_uniform.get("final"), m.holm.get("vs_uniform.final")),
                 _diff(m.vs_best.get("auc"), m.holm.get("vs_best.auc")),
                 _diff(m.vs_best.get("final"), m.holm.get("vs_best.final")),
                 *[_speed(m.speedups[unit]) for unit, _, _, _ in UNITS],
                 "n/a" if math.isnan(m.means["noisy_share_selected"]) else f"{m.means['noisy_share_selected']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    il = regime.il_model
    lines.append(f"| IL model itself *(baseline)* | {len(regime.methods[0].replicates)} | | {il['weighted_f1']:.3f} | "
                 f"{il['macro_f1']:.3f} |" + " |" * (len(head) - 5))
    return lines


def verdicts(regime: RegimeResult) -> list[str]:
    """Plain sentences for every method that uses the IL model's scores (RHO-Loss)."""
    out = []
    best = regime.method(regime.best_baseline).label if regime.best_baseline else None
    for m in regime.methods:
        if not m.vs_best:
            continue
        against_uniform = _verdict(m, "vs_uniform.auc", m.vs_uniform["auc"])
        against_best = _verdict(m, "vs_best.auc", m.vs_best["auc"])
        out.append(f"- **{m.label}**: AUC vs uniform: {against_uniform} ({m.vs_uniform['auc'].text()}, "
                   f"p_Holm={_p(m.holm.get('vs_uniform.auc'))}); vs the best equal-information baseline ({best}): "
                   f"AUC {against_best} ({m.vs_best['auc'].text()}, p_Holm={_p(m.holm.get('vs_best.auc'))}), "
                   f"final wF1 {m.vs_best['final'].text()} (p_raw={_p(m.vs_best['final'].p)}); final wF1 vs the IL "
                   f"model itself {m.vs_il_model.text() if m.vs_il_model else 'n/a'}; "
                   f"speed-up {_speed(m.speedups['seen'])} in samples seen, {_speed(m.speedups['wall_il'])} "
                   f"in wall time with the IL model.")
    return out


def _verdict(method: MethodResult, key: str, value: Paired) -> str:
    floor = method.floor.get(key, 0.0)
    verdict = judge(value, method.holm.get(key, math.nan), floor)
    if verdict == "undecidable":
        return f"undecidable with {value.n} replicates (p_Holm cannot fall below {floor:.3f})"
    return verdict


def _span(values: list, fmt: str) -> str:
    """``a`` or ``a to b`` for sorted distinct ``values``."""
    first, last = fmt.format(values[0]), fmt.format(values[-1])
    return first if first == last else f"{first} to {last}"


def power_line(regime: RegimeResult) -> str:
    """What the replicates can decide: the smallest p_Holm each primary comparison can reach."""
    family = [(m.floor[key], (m.vs_uniform if key.startswith("vs_uniform") else m.vs_best)["auc"].n)
              for m in regime.methods for key in m.floor if not math.isnan(m.floor[key])]
    floors, pairs = sorted({f for f, _ in family}), sorted({n for _, n in family})
    line = (f"Primary family: {regime.family} comparison(s), Holm-corrected; with {_span(pairs, '{}')} replicates "
            f"the smallest p_Holm any of them can reach is {_span(floors, '{:.3f}')}")
    if floors[0] >= ALPHA:
        return line + (f", not below {ALPHA}: no verdict is possible here, whatever the data; the intervals show "
                       "the size of the differences.")
    if floors[-1] >= ALPHA:
        return line + f": those that cannot fall below {ALPHA} are undecidable."
    return line + "."


def markdown(regimes: list[RegimeResult], skipped: list[str], command: str, runs: int) -> str:
    out = ["# Selection methods: paired comparison over replicates", "",
           f"Built by `{command}` from `{RUNS_FILE}` ({runs} runs; every number below can be recomputed from it "
           f"with `python experiments/report.py --runs metrics/comparison/{RUNS_FILE}`).", "",
           "A replicate redraws the synthetic data, the label noise, the split, the holdout model and the "
           "initialisation. Differences are paired by replicate: mean [95 % t interval] and the exact "
           "sign-flip permutation p-value. Primary comparisons (every RHO-Loss variant's AUC against uniform "
           "and against the best equal-information baseline) carry p_Holm, Holm-corrected within the regime; "
           f"**bold**: the interval excludes 0 and p_Holm < {ALPHA}. Secondary differences carry the raw "
           "p (p_raw), uncorrected, descriptive only. With n replicates the smallest possible "
           "p is 2/2^n (0.0625 for 5, 0.0156 for 7), and Holm raises it with the family's size; each regime says what "
           "its replicates can decide. AUC: area under the test weighted-F1 curve over the whole budget "
           "(normalised by the budget). Speed-up: cost for the method to reach uniform's final mean weighted "
           "F1 relative to uniform's, in samples seen (gradient steps' samples), forward passes (training and "
           "scoring), wall time, and those two with the IL model's training and scoring pass added; "
           "\"never\": the method's mean curve does not reach it within the budget. Baselines with the "
           "information RHO-Loss gets from the holdout: uniform on train + holdout, the IL filter (drop the "
           "20 % of training samples with the highest irreducible loss, then uniform), selection by the "
           "irreducible loss alone, and the IL model itself.", ""]
    for regime in regimes:
        out += [f"## {regime.name}" + (f": {regime.label}" if regime.label != regime.name else ""), ""]
        out += verdict_table(regime)
        out += [""]
        if regime.best_baseline:
            out += [f"Best equal-information baseline (highest mean AUC): "
                    f"**{regime.method(regime.best_baseline).label}**.", ""]
        if regime.family:
            out += [power_line(regime), ""]
        out += verdicts(regime) + [""]
        out += [f"![curves]({slug(regime.name)}_curves.png)", ""]
    if skipped:
        out += ["## Experiments left out", "", *[f"- {s}" for s in skipped], ""]
    return "\n".join(out)


def plot_curves(regime: RegimeResult, path: Path) -> None:
    """Replicate-mean test weighted F1 vs samples seen per method, the replicates' range shaded."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5))
    axis = figure.subplots()
    for m in regime.methods:
        values = regime.curves[m.name]
        style = "--" if m.baseline else "-"
        line, = axis.plot(regime.grid, values.mean(0), style, marker="o", ms=2, label=m.label)
        axis.fill_between(regime.grid, values.min(0), values.max(0), color=line.get_color(), alpha=0.06)
    axis.axhline(regime.il_model["weighted_f1"], color="#999999", ls=":", lw=1, label="IL model itself")
    axis.set_xlabel("samples seen")
    axis.set_ylabel("test weighted F1 (clean labels)")
    axis.set_title(f"{regime.name}: {regime.label}\nreplicate mean, shaded: min..max", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_report(table: pd.DataFrame, regimes: list[RegimeResult], skipped: list[str], out: Path,
                 command: str) -> list[str]:
    """Replace ``out`` with the report and the runs table; returns the files written."""
    with atomic_dir(out) as tmp:
        write_runs(table, tmp / RUNS_FILE)
        (tmp / "report.md").write_text(markdown(regimes, skipped, command, len(table)))
        summary = {"regimes": [r.as_dict() for r in regimes], "skipped": skipped}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        for regime in regimes:
            plot_curves(regime, tmp / f"{slug(regime.name)}_curves.png")
        files = sorted(p.name for p in tmp.iterdir())
    return files
