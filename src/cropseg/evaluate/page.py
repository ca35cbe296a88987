"""The evaluate stage's ``report.md``: headline, per-class table, pictures and worst patches on one page.

Plain text built from the stage's metrics and tables; kept apart from the stage
(:mod:`cropseg.evaluate.stage`) so that changing the page's wording does not touch the scoring.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..nn.scoring import CROP_BORDER

HEADLINE = ("accuracy", "weighted_f1", "macro_f1", "crop5_accuracy", "crop5_weighted_f1", "crop5_macro_f1")


def fmt(value: float | None, digits: int = 4) -> str:
    """A score with ``digits`` decimals, ``n/a`` for a missing or NaN one (no support, no clean truth)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def report_page(metrics: dict[str, Any], classes: pd.DataFrame, scores: pd.DataFrame, model_path: Path,
           split_name: str = "test", outputs: dict[str, str] | None = None) -> str:
    """The text of ``report.md``: the headline, per-class table, pictures (relative links), worst patches.

    Args:
        metrics: the evaluate stage's ``metrics.json`` (``test``, optional ``clean``, ``model``,
            ``n_patches``, ``n_samples``).
        classes: the per-class table (``name``, ``precision``, ``recall``, ``f1``, ``support``,
            ``predicted``; ``clean_f1`` with a clean truth).
        scores: the per-patch scores (``pixels``, ``weighted_f1`` and whatever attributes exist).
        model_path: the model file, named in the first line.
        split_name: the scored split.
        outputs: file name -> description, listed at the end.

    Returns:
        The Markdown text.
    """
    test, clean = metrics["test"], metrics.get("clean")
    lines = [f"# Evaluation on the {split_name} split", "",
             f"Model `{model_path}` (epoch {metrics['model']['epoch']}, chosen on validation weighted F1 "
             f"{fmt(metrics['model']['val_weighted_f1'])}); {metrics['n_patches']} {split_name} patches, "
             f"{metrics['n_samples']} sub-patches, {test['n_pixels']} parcel pixels (label 0 ignored). "
             f"`crop5`: the same on the sub-patch centres, a {CROP_BORDER}-pixel border removed.", "",
             "## Headline", ""]
    header = "| metric | labels |" + (" clean truth |" if clean else "")
    lines += [header, "|---|---:|" + ("---:|" if clean else "")]
    for key in HEADLINE:
        lines.append(f"| {key} | {fmt(test[key])} |" + (f" {fmt(clean[key])} |" if clean else ""))
    if clean:
        lines += ["", "*labels*: against the (possibly noisy) labels the model was trained on; *clean truth*: "
                  "against the synthetic generator's clean labels."]
    lines += ["", "## Per class", "",
              "| class | precision | recall | F1 | support |" + (" clean F1 |" if clean else ""),
              "|---|---:|---:|---:|---:|" + ("---:|" if clean else "")]
    for row in classes.itertuples():
        if row.support == 0 and row.predicted == 0:
            cells = "| – | – | – | 0 |"
        else:
            cells = f"| {row.precision:.3f} | {row.recall:.3f} | {row.f1:.3f} | {row.support} |"
        lines.append(f"| {row.name} {cells}" + (f" {row.clean_f1:.3f} |" if clean else ""))
    lines += ["", "![F1 per class](per_class_f1.png)", "", "## Confusion matrix", "",
              "Rows: true class; columns: predicted class; colour and percentage: share of the true class; "
              "exact counts in `confusion_matrix.csv`.", "", "![confusion matrix](confusion.png)", "",
              "## Previews", "", "![prediction previews](previews.png)", "", "## Patches", "",
              f"The five {split_name} patches with the lowest weighted F1 (all patches, with their attributes, in "
              "`patch_scores.csv`):", ""]
    columns = [c for c in ("path", "tile", "year", "elevation_mean", "pixels", "accuracy", "weighted_f1")
               if c in scores.columns]
    worst = scores[scores["pixels"] > 0].sort_values("weighted_f1").head(5)
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in worst.iterrows():
        cells = [(fmt(row[c], 3) if isinstance(row[c], float) else str(row[c])) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Files", ""] + [f"- `{name}`: {text}" for name, text in (outputs or {}).items()]
    return "\n".join(lines) + "\n"
