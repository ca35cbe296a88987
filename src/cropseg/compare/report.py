"""Write a selection-method comparison: ``report.md``, ``summary.json`` and PNGs per regime.

Figures are drawn on bare :class:`matplotlib.figure.Figure` objects (no pyplot, no backend set at
import). ``dvc plots show`` HTML needs a CDN for vega, so the pictures are PNG.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_dir
from .statistics import Interval
from .results import Regime, Row

COLORS = {"uniform": "#444444", "random": "#1f77b4", "loss": "#d62728", "margin": "#ff7f0e", "rho_loss": "#2ca02c"}
COLUMNS = [("auc", "test wF1 AUC"), ("auc_vs_uniform", "Δ AUC vs uniform"), ("auc_vs_loss", "Δ AUC vs loss"),
           ("final_f1", "final test wF1"), ("final_f1_vs_uniform", "Δ final vs uniform"),
           ("final_f1_vs_loss", "Δ final vs loss"), ("speedup", "speed-up vs uniform"),
           ("noisy_share", "noisy share selected"), ("noisy_share_vs_uniform", "Δ noisy vs uniform"),
           ("noisy_share_ratio_to_loss", "noisy share / loss's")]


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _name(row: Row) -> str:
    return row.method if row.method == "uniform" else f"{row.method} (block {row.block})"


def _cell(value: Interval | None, key: str) -> str:
    if value is None:
        return ""
    if math.isnan(value.value):  # e.g. a ratio of two zero noisy shares (no noise in the regime)
        return "n/a"
    text = value.text(2 if key == "speedup" else 3)
    if key == "speedup":
        text = text.replace(" [", "× [")
        return f"**{text}**" if value.excludes(1.0) else text
    if key.endswith(("_vs_uniform", "_vs_loss")):
        return f"**{text}**" if value.excludes_zero else text
    return text


def verdicts(regime: Regime) -> list[str]:
    """Plain sentences: which differences' intervals exclude 0 (or 1x for the speed-up)."""
    lines = []
    for row in regime.rows:
        if row.method == "uniform":
            continue
        for key, what, reference in (("auc_vs_uniform", "test-F1 AUC", "uniform"),
                                     ("final_f1_vs_uniform", "final test F1", "uniform"),
                                     ("auc_vs_loss", "test-F1 AUC", "loss")):
            value = row.values.get(key)
            if value is None:
                continue
            if value.excludes_zero:
                word = "higher" if value.low > 0 else "lower"
                lines.append(f"- {_name(row)}: {word} {what} than {reference} (Δ {value.text()})")
            else:
                lines.append(f"- {_name(row)}: {what} not distinguishable from {reference}'s (Δ {value.text()})")
        speed = row.values.get("speedup")
        if speed is not None:
            word = "faster than" if speed.low > 1 else ("slower than" if speed.high < 1 else "not distinguishable from")
            lines.append(f"- {_name(row)}: {word} uniform, speed-up {speed.text(2)}")
    return lines


def markdown(regimes: list[Regime], skipped: list[str], command: str) -> str:
    out = ["# Selection methods compared (paired by seed, 95 % bootstrap intervals)", "",
           f"Built by `{command}` from `dvc exp show --json` and each experiment's "
           "`metrics/evaluate/curve.csv` (test weighted F1 on clean labels at fixed samples seen).",
           "Bold: the interval of a paired difference excludes 0 (speed-up: excludes 1×). "
           "AUC: mean test weighted F1 over the budget of samples seen. Speed-up: samples seen by uniform's "
           "seed-mean curve to reach its own final F1, divided by the method's (0: never reached). Noisy share: "
           "parcel pixels with a wrong label among those selected, in model-class space.", ""]
    for regime in regimes:
        out += [f"## {regime.label}", "",
                "Seeds: those paired with uniform (a row's intervals need 2 or more). Irreducible-loss model: clean-test weighted F1 "
                f"{_fmt(regime.holdout.get('clean_test_weighted_f1'))} ({regime.holdout.get('scored_against')}), "
                f"trained on {regime.holdout.get('holdout_samples')} holdout samples. "
                f"Figures: `{slug(regime.label)}_curves.png`, `{slug(regime.label)}_intervals.png`.", ""]
        out.append("| method | seeds | " + " | ".join(title for _, title in COLUMNS) + " |")
        out.append("|---" * (len(COLUMNS) + 2) + "|")
        for row in regime.rows:
            out.append(f"| {_name(row)} | {len(row.seeds)} | "
                       + " | ".join(_cell(row.values.get(k), k) for k, _ in COLUMNS) + " |")
        out += ["", *verdicts(regime), ""]
    if skipped:
        out += ["## Experiments left out", "", *[f"- {s}" for s in skipped], ""]
    return "\n".join(out)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot_curves(regime: Regime, path: Path) -> None:
    """Seed-mean test F1 vs samples seen per method, with the seeds' range shaded."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5))
    axis = figure.subplots()
    for (method, block), by_seed in sorted(regime.curves.items()):
        values = np.stack(list(by_seed.values()))
        style = "-" if block in (1, 2) else "--"
        label = method if method == "uniform" else f"{method} (block {block})"
        axis.plot(regime.grid, values.mean(0), style, marker="o", ms=3, color=COLORS.get(method), label=label)
        axis.fill_between(regime.grid, values.min(0), values.max(0), color=COLORS.get(method), alpha=0.08)
    axis.set_xlabel("samples seen (gradient samples)")
    axis.set_ylabel("test weighted F1 (clean labels)")
    axis.set_title(f"{regime.label}\nseed mean, shaded: min..max over seeds", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_intervals(regime: Regime, path: Path) -> None:
    """Forest plot: paired differences to uniform (AUC, final F1), speed-up, noisy share."""
    from matplotlib.figure import Figure

    panels = [("auc_vs_uniform", "Δ test-F1 AUC vs uniform", 0.0), ("final_f1_vs_uniform", "Δ final test F1 vs uniform",
                                                                      0.0),
              ("speedup", "speed-up vs uniform (×)", 1.0), ("noisy_share", "noisy share of selected pixels", None)]
    rows = [r for r in regime.rows if r.method != "uniform"] + [r for r in regime.rows if r.method == "uniform"]
    figure = Figure(figsize=(16, 0.5 * len(rows) + 2))
    axes = figure.subplots(1, len(panels), sharey=True)
    for axis, (key, title, reference) in zip(axes, panels):
        for y, row in enumerate(rows):
            value = row.values.get(key)
            if value is None:
                continue
            axis.errorbar(value.value, y, xerr=[[value.value - value.low], [value.high - value.value]], fmt="o",
                          color=COLORS.get(row.method), capsize=3)
        if reference is not None:
            axis.axvline(reference, color="#999999", ls="--", lw=1)
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3)
        axis.locator_params(axis="x", nbins=5)
    axes[0].set_yticks(range(len(rows)), [_name(r) for r in rows])
    figure.suptitle(f"{regime.label}: means and paired-bootstrap 95 % intervals", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_report(regimes: list[Regime], skipped: list[str], out: Path, command: str) -> list[str]:
    """Replace ``out`` with the report; returns the files written."""
    with atomic_dir(out) as tmp:
        (tmp / "report.md").write_text(markdown(regimes, skipped, command))
        summary = {"regimes": [r.as_dict() for r in regimes], "skipped": skipped}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        for regime in regimes:
            plot_curves(regime, tmp / f"{slug(regime.label)}_curves.png")
            plot_intervals(regime, tmp / f"{slug(regime.label)}_intervals.png")
        files = sorted(p.name for p in tmp.iterdir())
    return files
