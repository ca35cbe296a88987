"""Compare selection methods at equal cost: the RHO-Loss experiment on synthetic noisy S4A.

Every method trains the same model from the same seed on the same data for the same number of
samples *seen* (gradient samples): uniform for ``epochs`` passes, a method with block size ``b``
for ``b * epochs`` passes over the data *considered*. Validation curves are then compared against
samples seen and against optimiser steps, and two numbers summarise the claim of the RHO-Loss
paper: the steps a method needs to reach uniform's best validation weighted F1 (as a fraction of
the steps uniform needed), and the share of noisy pixels in the samples each method selected.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLORS = {"uniform": "#444444", "random": "#1f77b4", "loss": "#d62728", "margin": "#ff7f0e", "rho_loss": "#2ca02c"}


@dataclass
class MethodResult:
    method: str
    block_size: int
    history: list[dict[str, float]]  # validation rows: step, samples_seen, weighted_f1, selection/...
    noisy_share_selected: float
    noisy_share_considered: float


def read_curve(val_csv: Path) -> list[dict[str, float]]:
    """Validation rows written by the training loop (``metrics/<stage>/val.csv``)."""
    with open(val_csv, newline="") as handle:
        return [{k: float(v) if v not in ("", None) else math.nan for k, v in row.items()} for row in csv.DictReader(handle)]


def read_noise_shares(steps_csv: Path) -> tuple[float, float]:
    """Noisy-pixel share of the selected samples and of all samples considered, over the whole run.

    Step rows log per-block shares; blocks are equal-sized, so the run's share is weighted by the
    labelled pixels trained on (``pixels_seen`` increments).
    """
    selected = considered = weight = 0.0
    previous = 0.0
    with open(steps_csv, newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("noisy_share_selected"):
                continue
            pixels = float(row["pixels_seen"]) - previous
            previous = float(row["pixels_seen"])
            selected += float(row["noisy_share_selected"]) * pixels
            considered += float(row["noisy_share_block"]) * pixels
            weight += pixels
    return (selected / weight, considered / weight) if weight else (math.nan, math.nan)


def steps_to_reach(history: list[dict[str, float]], target: float) -> float:
    """First optimiser step at which validation weighted F1 reached ``target`` (inf if never)."""
    for row in history:
        if row["weighted_f1"] >= target:
            return row["step"]
    return math.inf


def summarise(results: list[MethodResult]) -> dict[str, Any]:
    """The comparison's numbers, relative to uniform."""
    uniform = next(r for r in results if r.method == "uniform")
    best_row = max(uniform.history, key=lambda row: row["weighted_f1"])
    target, uniform_steps = best_row["weighted_f1"], best_row["step"]
    summary: dict[str, Any] = {"uniform_best_weighted_f1": target, "uniform_steps_to_best": uniform_steps,
                               "methods": {}}
    for result in results:
        steps = steps_to_reach(result.history, target)
        summary["methods"][result.method] = {
            "block_size": result.block_size,
            "best_weighted_f1": max(row["weighted_f1"] for row in result.history),
            "steps_to_uniform_best": steps,
            "steps_ratio_vs_uniform": steps / uniform_steps if math.isfinite(steps) else math.inf,
            "noisy_share_selected": result.noisy_share_selected,
            "noisy_share_considered": result.noisy_share_considered,
        }
    methods = summary["methods"]
    if "rho_loss" in methods and "loss" in methods and methods["loss"]["noisy_share_selected"] > 0:
        summary["rho_vs_loss_noisy_share"] = (methods["rho_loss"]["noisy_share_selected"]
                                              / methods["loss"]["noisy_share_selected"])
    return summary


def write_outputs(results: list[MethodResult], out: Path) -> dict[str, Any]:
    """Per-method curves (CSV, for ``dvc plots``), ``summary.json`` and ``comparison.png``."""
    out.mkdir(parents=True, exist_ok=True)
    for result in results:
        columns = ["step", "samples_seen", "samples_considered", "weighted_f1", "accuracy", "macro_f1"]
        with open(out / f"{result.method}.csv", "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            for row in result.history:
                writer.writerow([int(row[c]) if c.startswith(("step", "samples")) else row[c] for c in columns])
    summary = summarise(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    plot_comparison(results, summary, out / "comparison.png")
    return summary


def plot_comparison(results: list[MethodResult], summary: dict[str, Any], path: Path) -> None:
    """Three panels to ``path``: val F1 against samples seen and against steps, noise selected.

    Drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot), so importing or calling this
    sets no matplotlib backend and leaves no global figure state behind; ``savefig`` renders
    with Agg (https://matplotlib.org/stable/gallery/user_interfaces/web_application_server_sgskip.html).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 4.8))
    axes = figure.subplots(1, 3)
    for result in results:
        color = COLORS.get(result.method)
        label = f"{result.method} (block {result.block_size})" if result.block_size > 1 else result.method
        xs_seen = [row["samples_seen"] for row in result.history]
        xs_step = [row["step"] for row in result.history]
        ys = [row["weighted_f1"] for row in result.history]
        axes[0].plot(xs_seen, ys, marker="o", ms=3, color=color, label=label)
        axes[1].plot(xs_step, ys, marker="o", ms=3, color=color, label=label)
    for axis, xlabel in zip(axes[:2], ("samples seen (gradient samples)", "optimiser steps")):
        axis.axhline(summary["uniform_best_weighted_f1"], color="#999999", ls="--", lw=1)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("val weighted F1 (parcel pixels)")
        axis.grid(alpha=0.3)
    axes[0].set_title("val weighted F1 vs samples seen")
    axes[1].set_title("val weighted F1 vs steps (dashed: uniform's best)")
    axes[0].legend(loc="lower right", fontsize=8)
    names = [r.method for r in results if not math.isnan(r.noisy_share_selected)]
    selected = [summary["methods"][m]["noisy_share_selected"] for m in names]
    considered = [summary["methods"][m]["noisy_share_considered"] for m in names]
    positions = range(len(names))
    axes[2].bar([p - 0.2 for p in positions], considered, width=0.4, color="#bbbbbb", label="all samples considered")
    axes[2].bar([p + 0.2 for p in positions], selected, width=0.4, color=[COLORS.get(m) for m in names],
                label="samples selected")
    axes[2].set_xticks(list(positions), names)
    axes[2].set_ylabel("share of noisy (mislabelled) parcel pixels")
    axes[2].set_title("label noise in what each method trains on")
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
