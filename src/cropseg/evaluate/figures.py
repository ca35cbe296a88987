"""The evaluate stage's pictures: confusion matrix, F1 per class and previews of test patches.

Kept apart from the stage (:mod:`cropseg.evaluate.stage`) so that the scoring reads without the
matplotlib layout code; matplotlib is imported inside the functions and set to the Agg backend
(:func:`cropseg.core.plotting.pyplot`), so importing this module costs nothing. The classes have
the colours of :func:`cropseg.core.plotting.class_colours`, as in the predict stage's crop maps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.plotting import class_colours, pyplot
from ..nn.dataset import SubPatchDataset
from ..split.labels import LabelSet
from ..medians.store_reader import open_patch
from .page import fmt
from ..medians.subpatches import stitch

RGB_BANDS = ("B04", "B03", "B02")
CORRECT_COLOUR, WRONG_COLOUR, IGNORED_COLOUR = "#c7e9c0", "#111111", "#ffffff"  # apart from the class colours


def _compact(count: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(int(count))


def plot_confusion(matrix: np.ndarray, class_names: tuple[str, ...], path: Path, title: str) -> None:
    """Rows = true classes (background left out), columns = predicted classes; colour = share of the row.

    Args:
        matrix: ``(C, C)`` pixel counts, rows truth, columns prediction, background included.
        class_names: the ``C`` class names, background first.
        path: the PNG to write.
        title: the figure's title.
    """
    plt = pyplot()
    counts = matrix[1:]
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    n_rows, n_cols = counts.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n_cols + 2.2, 1.2 + 0.5 * n_rows + 1.6), dpi=110)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for r in range(n_rows):
        for c in range(n_cols):
            if counts[r, c]:
                percent = f"{share[r, c]:.0%}" if share[r, c] >= 0.005 else "<1%"
                ax.text(c, r, f"{percent}\n{_compact(counts[r, c])}", ha="center", va="center",
                        fontsize=6.5, color="white" if share[r, c] > 0.55 else "black")
    ax.set_xticks(range(n_cols), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n_rows), [f"{name} ({_compact(t)})" for name, t in zip(class_names[1:], totals[:, 0])],
                  fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (parcel pixels)")
    ax.set_title(title, fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share of the true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_per_class_f1(table: pd.DataFrame, path: Path, title: str) -> None:
    """Horizontal F1 bars per class (and clean-truth F1 beside them), support written at the end.

    Args:
        table: one row per class with ``name``, ``f1``, ``support`` and, when there is a clean
            truth, ``clean_f1`` (the evaluate stage's per-class table).
        path: the PNG to write.
        title: the figure's title.
    """
    plt = pyplot()
    has_clean = "clean_f1" in table.columns
    n = len(table)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.42 * n * (1.4 if has_clean else 1)), dpi=110)
    y = np.arange(n)
    height = 0.38 if has_clean else 0.7
    ax.barh(y - (height / 2 if has_clean else 0), table["f1"], height=height, color="#2c7bb6", label="labels")
    if has_clean:
        ax.barh(y + height / 2, table["clean_f1"], height=height, color="#fdae61", label="clean truth")
    for row, (f1, support) in enumerate(zip(table["f1"], table["support"])):
        text = f"{f1:.2f}  (n={_compact(support)})" if support else "no pixels"
        ax.text(min(f1, 1.0) + 0.01, row - (height / 2 if has_clean else 0), text, va="center", fontsize=7)
    ax.set_yticks(y, table["name"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.18)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel("F1 (parcel pixels)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    if has_clean:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def rgb_composite(dataset: SubPatchDataset, patch: int) -> tuple[np.ndarray, str]:
    """Stitched ``(H, W, 3)`` image in 0..1 of the middle month of the loader's months, and its caption.

    B04/B03/B02 stretched between their 2nd and 98th percentiles; without all three, the first
    band in grey.

    Args:
        dataset: the dataset the patch belongs to (its store, bands and months).
        patch: the patch's position in ``dataset.records``.
    """
    bands = list(dataset.meta["bands"])
    chosen = [bands.index(b) for b in RGB_BANDS if b in bands]
    names = [b for b in RGB_BANDS if b in bands]
    if len(chosen) < 3:  # no true colour: the first band in grey
        chosen, names = [0, 0, 0], [bands[0]] * 3
    period = (dataset.periods.start + dataset.periods.stop - 1) // 2
    record = dataset.records[patch]
    medians = open_patch(dataset.root, record)[0]
    image = stitch(np.asarray(medians[:, :, period][:, :, chosen], dtype=np.float64))  # (3, H, W)
    image = np.nan_to_num(image)
    lo = np.percentile(image, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(image, 98, axis=(1, 2), keepdims=True)
    image = np.clip((image - lo) / np.maximum(hi - lo, 1e-9), 0, 1).transpose(1, 2, 0)
    start = dataset.meta["periods"][str(record["year"])][period]
    caption = f"{start[:7]} " + ("RGB" if names == list(RGB_BANDS) else "/".join(dict.fromkeys(names)))
    return image, caption


def plot_previews(previews: list[tuple[int, np.ndarray, np.ndarray]], dataset: SubPatchDataset, label_set: LabelSet,
                  scores: pd.DataFrame, path: Path, title: str = "Test patches") -> None:
    """One row per patch: RGB of one month, truth, prediction (faded off parcels), errors; class legend.

    Args:
        previews: ``(patch position, truth, prediction)`` per row: full-patch model-class maps.
        dataset: the dataset the patches belong to (for the RGB and the names).
        label_set: the model's classes and names.
        scores: one row per patch of ``dataset`` with ``pixels``, ``correct``, ``accuracy`` and
            ``weighted_f1`` (the evaluate stage's patch scores).
        path: the PNG to write.
        title: the figure's title.
    """
    plt = pyplot()
    from matplotlib.patches import Patch

    colours = class_colours(label_set.n_classes)
    n, columns = max(len(previews), 1), 4
    legend_height = 0.45 + 0.2 * max(math.ceil(label_set.n_classes / columns), 3)
    # explicit layout (inches): square panels, room for titles, row labels, the suptitle and legends
    width, left, right, gap, title_room, top = 13.0, 0.75, 0.1, 0.15, 0.4, 0.55
    panel = (width - left - right - 3 * gap) / 4
    height = top + n * (panel + title_room) + legend_height
    fig, axes = plt.subplots(n, 4, figsize=(width, height), dpi=100, squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - (top + title_room) / height,
                        bottom=legend_height / height, wspace=gap / panel, hspace=title_room / panel)
    shown_classes: set[int] = set()
    for row, (p, truth, prediction) in enumerate(previews):
        rgb, caption = rgb_composite(dataset, p)
        parcel = truth > 0
        prediction = np.clip(prediction, 0, label_set.n_classes - 1)
        truth_img = colours[np.clip(truth, 0, label_set.n_classes - 1)]
        pred_img = colours[np.where(parcel, prediction, 0)]  # off the labels the model is not scored
        errors = np.empty(truth.shape + (3,))
        errors[...] = np.asarray(plt.matplotlib.colors.to_rgb(IGNORED_COLOUR))
        errors[parcel & (prediction == truth)] = plt.matplotlib.colors.to_rgb(CORRECT_COLOUR)
        errors[parcel & (prediction != truth)] = plt.matplotlib.colors.to_rgb(WRONG_COLOUR)
        shown_classes |= set(np.unique(truth[parcel]).tolist()) | set(np.unique(prediction[parcel]).tolist())
        info = scores.iloc[p]
        wrong = int(info["pixels"] - info["correct"])
        titles = (caption, "truth (labels)", "prediction (on labelled pixels)",
                  f"errors: {wrong} of {int(info['pixels'])} parcel px wrong")
        for ax, image, panel_title in zip(axes[row], (rgb, truth_img, pred_img, errors), titles):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(panel_title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        name = Path(dataset.records[p]["path"]).stem
        axes[row][0].set_ylabel(f"{name}\naccuracy {fmt(info['accuracy'], 3)}\nweighted F1 "
                                f"{fmt(info['weighted_f1'], 3)}", fontsize=8)
    edge = "#555555"
    handles = [Patch(facecolor=colours[k], edgecolor=edge, label=f"{k} {label_set.class_names[k]}"
                     + (" / not labelled" if k == 0 else "")) for k in sorted(shown_classes | {0})]
    errors_legend = [Patch(facecolor=CORRECT_COLOUR, edgecolor=edge, label="correct"),
                     Patch(facecolor=WRONG_COLOUR, edgecolor=edge, label="wrong"),
                     Patch(facecolor=IGNORED_COLOUR, edgecolor=edge, label="not labelled (ignored)")]
    fig.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.02, 0.0), ncol=columns, fontsize=8,
               frameon=False, title="classes (truth, prediction)", title_fontsize=8)
    fig.legend(handles=errors_legend, loc="lower right", bbox_to_anchor=(0.98, 0.0), ncol=1, fontsize=8,
               frameon=False, title="errors", title_fontsize=8)
    fig.suptitle(title, fontsize=11, y=1 - 0.2 / height)
    fig.savefig(path)
    plt.close(fig)
