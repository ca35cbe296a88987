"""The evaluate stage: the trained model on the test split, as DVC metrics, DVC plots, pictures and a report.

One pass over every sub-patch of the test patches (:func:`cropseg.evaluation.predict`, the code
path of the validation during training) accumulates, on the device:

* confusion matrices over parcel pixels (label 0 ignored), all of them and the sub-patch centres
  with a 5-pixel border removed (``crop5``), and one per patch (:class:`SplitConfusion`);
* the same against the synthetic generator's clean labels (``data/netcdf/truth/clean_labels``),
  when every test patch has one: what a perfect annotator would have said;
* the predictions of a few preview patches, stitched back from their sub-patches.

Everything is written to one folder (replaced atomically), see :data:`OUTPUTS`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_dir
from .checkpoint import load_model
from .dataset import SubPatchDataset, read_split_list
from .evaluation import CROP_BORDER, SplitConfusion, predict, sequential_loader
from .labels import LabelSet
from .medians import open_patch
from .metrics import scores_from_confusion
from .precision import pick_device, use_bf16

OUTPUTS = {
    "metrics.json": "DVC metrics: test (noisy labels), clean (synthetic clean truth), counts, model",
    "per_class.csv": "precision / recall / F1 / support per class (DVC plot: F1 per class)",
    "confusion.csv": "DVC confusion plot data: actual, predicted rows, per mille of each true class",
    "confusion_matrix.csv": "exact pixel counts, rows = truth, columns = prediction",
    "patch_scores.csv": "accuracy and F1 per test patch with its attributes from patches.csv",
    "confusion.png": "confusion matrix picture",
    "per_class_f1.png": "F1 per class bar chart",
    "previews.png": "RGB of one month, truth, prediction and errors of a few test patches",
    "report.md": "all of it on one page",
}
HEADLINE = ("accuracy", "weighted_f1", "macro_f1", "crop5_accuracy", "crop5_weighted_f1", "crop5_macro_f1")
PATCH_ATTRIBUTES = ("year", "tile", "patch_x", "patch_y", "country", "n_dates", "elevation_mean", "elevation_std",
                    "lon_min", "lat_min", "lon_max", "lat_max", "parcel_pixels", "largest_class")
RGB_BANDS = ("B04", "B03", "B02")
BACKGROUND_COLOUR = "#d9d9d9"
CORRECT_COLOUR, WRONG_COLOUR, IGNORED_COLOUR = "#c7e9c0", "#111111", "#ffffff"  # apart from the class colours


class EvaluateError(ValueError):
    """The model, the medians and the split do not fit together."""


@dataclass
class EvaluatePaths:
    """Where the evaluate stage reads and writes (defaults: the dvc.yaml paths)."""

    model: Path = Path("models/model.pt")
    medians: Path = Path("data/medians")
    split: Path = Path("data/split/test.txt")
    patches: Path = Path("data/split/patches.csv")
    clean: Path = Path("data/netcdf/truth/clean_labels")
    out: Path = Path("metrics/evaluate")


@dataclass
class EvaluateResult:
    metrics: dict[str, Any]
    seconds: float
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        test, clean = self.metrics["test"], self.metrics.get("clean")
        text = (f"evaluate: {self.metrics['n_patches']} test patches, {test['n_pixels']} parcel pixels: "
                f"accuracy {_fmt(test['accuracy'])}, weighted F1 {_fmt(test['weighted_f1'])}, "
                f"macro F1 {_fmt(test['macro_f1'])}")
        if clean:
            text += f" (clean truth: weighted F1 {_fmt(clean['weighted_f1'])})"
        return text + f", {self.seconds:.1f} s"


# ---------------------------------------------------------------------------------------------
# sub-patches <-> full patches


def cut(full: np.ndarray, window: int) -> np.ndarray:
    """``(..., size, size)`` -> ``(sub_y, sub_x, ..., window, window)``, as the medians stage cuts labels."""
    full = np.asarray(full)
    *lead, h, w = full.shape
    if h % window or w % window:
        raise ValueError(f"a {h}x{w} patch is not a whole number of {window}-pixel windows")
    shaped = full.reshape(*lead, h // window, window, w // window, window)
    k = len(lead)
    order = (k, k + 2, *range(k), k + 1, k + 3)
    return np.ascontiguousarray(shaped.transpose(order))


def stitch(windows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`cut`: ``(sub_y, sub_x, ..., h, w)`` -> ``(..., sub_y * h, sub_x * w)``."""
    windows = np.asarray(windows)
    sub_y, sub_x, *lead, h, w = windows.shape
    k = len(lead)
    order = (*range(2, 2 + k), 0, 2 + k, 1, 3 + k)
    return windows.transpose(order).reshape(*lead, sub_y * h, sub_x * w)


class PatchCanvas:
    """Full-patch maps of a few patches of a split, filled from batches of sub-patches.

    ``add(index, values)`` puts each sample's ``(h, w)`` map where its sub-patch lies in its patch
    (sample ``i`` = patch ``i // per_patch``, sub-patch ``divmod(i % per_patch, sub_x)``); samples
    of other patches are skipped. ``full(p)`` is the stitched map of patch position ``p``
    (``fill`` where no sub-patch came).
    """

    def __init__(self, patches: list[int], per_patch: int, sub_x: int, window: int, dtype=np.int64, fill=-1):
        self.per_patch, self.sub_x = per_patch, sub_x
        sub_y = per_patch // sub_x if sub_x else 0
        self.maps = {p: np.full((sub_y, sub_x, window, window), fill, dtype=dtype) for p in patches}

    def add(self, index: np.ndarray | torch.Tensor, values: np.ndarray | torch.Tensor) -> None:
        index = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
        patch, within = np.divmod(index, self.per_patch)
        wanted = np.flatnonzero(np.isin(patch, list(self.maps)))
        if not len(wanted):
            return
        values = values[torch.as_tensor(wanted)] if isinstance(values, torch.Tensor) else np.asarray(values)[wanted]
        values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
        sub_y, sub_x = np.divmod(within[wanted], self.sub_x)
        for row, (p, y, x) in enumerate(zip(patch[wanted], sub_y, sub_x)):
            self.maps[int(p)][y, x] = values[row]

    def full(self, patch: int) -> np.ndarray:
        return stitch(self.maps[patch])


# ---------------------------------------------------------------------------------------------
# clean truth (synthetic data)


def clean_label_path(clean_dir: Path, relpath: str) -> Path:
    """The generator writes ``truth/clean_labels/<netCDF stem>.npy`` for every patch."""
    return Path(clean_dir) / f"{Path(relpath).stem}.npy"


class CleanTruth:
    """Clean model-class labels of the samples of a dataset, cut like the medians labels."""

    def __init__(self, dataset: SubPatchDataset, clean_dir: Path, label_set: LabelSet):
        self.dataset, self.clean_dir, self.label_set = dataset, Path(clean_dir), label_set
        self._cache: tuple[int, np.ndarray] | None = None  # the last patch: batches come in patch order

    @staticmethod
    def available(dataset: SubPatchDataset, clean_dir: Path) -> bool:
        records = dataset.records
        return bool(records) and all(clean_label_path(clean_dir, r["path"]).is_file() for r in records)

    def _patch(self, p: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != p:
            record = self.dataset.records[p]
            full = np.load(clean_label_path(self.clean_dir, record["path"]))
            if full.shape != (record["size"], record["size"]):
                raise EvaluateError(f"{clean_label_path(self.clean_dir, record['path'])}: shape {full.shape}, "
                                    f"expected the patch size {record['size']}x{record['size']}")
            self._cache = (p, cut(self.label_set.map(full), self.dataset.window))
        return self._cache[1]

    def labels(self, index: torch.Tensor) -> torch.Tensor:
        """``(N, window, window)`` int64 clean classes of the samples with global ``index``."""
        index = index.cpu().numpy()
        patch, within = np.divmod(index, self.dataset.per_patch)
        sub_y, sub_x = np.divmod(within, self.dataset.sub_x)
        out = np.empty((len(index), self.dataset.window, self.dataset.window), dtype=np.int64)
        for row, (p, y, x) in enumerate(zip(patch, sub_y, sub_x)):
            out[row] = self._patch(int(p))[y, x]
        return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------------
# the stage


def preview_positions(n_patches: int, count: int) -> list[int]:
    """``count`` patch positions spread evenly over the split list (first and last included)."""
    if n_patches == 0 or count <= 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, n_patches - 1, min(count, n_patches))})


def evaluate(paths: EvaluatePaths, *, label_set_name: str | None = None, device: str = "auto",
             precision: str = "auto", batch_size: int = 16, workers: int = 0, previews: int = 4,
             progress: bool = True) -> EvaluateResult:
    """Evaluate ``paths.model`` on the split list ``paths.split`` and write everything to ``paths.out``.

    The loader settings (months, normalisation) and the label set come from the model file;
    ``label_set_name`` (``params.labels``), when given, must match the model's. Every sub-patch
    of each test patch is predicted (sub-patches without parcel pixels add nothing to the metrics
    but complete the previews).
    """
    from tqdm import tqdm

    started = time.perf_counter()
    torch_device = pick_device(device)
    bf16 = use_bf16(precision, torch_device)
    model, content = load_model(paths.model, torch_device)
    label_set = LabelSet.from_dict(content["labels"], str(paths.model))
    if label_set_name is not None and label_set.name != label_set_name:
        raise EvaluateError(f"{paths.model} was trained with label set {label_set.name!r} but params.labels is "
                            f"{label_set_name!r}: re-run the train stage")
    loader_cfg = content["loader"]
    dataset = SubPatchDataset(paths.medians, read_split_list(paths.split), label_set, months=loader_cfg["months"],
                              normalize=loader_cfg["normalize"], skip_empty=False)
    if not dataset.records:
        raise EvaluateError(f"{paths.split}: no patches to evaluate")
    n_patches, n_classes = len(dataset.records), label_set.n_classes
    noisy = SplitConfusion(n_classes, n_patches, dataset.per_patch, torch_device)
    clean_truth = CleanTruth(dataset, paths.clean, label_set) if CleanTruth.available(dataset, paths.clean) else None
    clean = SplitConfusion(n_classes, n_patches, dataset.per_patch, torch_device) if clean_truth else None
    shown = preview_positions(n_patches, previews)
    canvas = PatchCanvas(shown, dataset.per_patch, dataset.sub_x, dataset.window)
    truth_canvas = PatchCanvas(shown, dataset.per_patch, dataset.sub_x, dataset.window)

    loader = sequential_loader(dataset, batch_size, workers=workers, pin_memory=torch_device.type == "cuda")
    batches = tqdm(predict(model, loader, torch_device, bf16), total=len(loader), desc="evaluate", unit="batch",
                   disable=not progress, leave=False)
    for batch, log_probs in batches:
        prediction = log_probs.argmax(1)
        noisy.update(batch.index, prediction, batch.y)
        if clean is not None:
            clean.update(batch.index, prediction, clean_truth.labels(batch.index))
        if shown:
            canvas.add(batch.index, prediction)
            truth_canvas.add(batch.index, batch.y)
    noisy.sync()
    if clean is not None:
        clean.sync()

    metrics = build_metrics(noisy, clean, content, n_patches=n_patches, n_samples=len(dataset))
    with atomic_dir(paths.out) as out:
        write_outputs(out, metrics=metrics, noisy=noisy, clean=clean, label_set=label_set, dataset=dataset,
                      patches_csv=paths.patches, previews=[(p, truth_canvas.full(p), canvas.full(p)) for p in shown],
                      model_path=paths.model, split_name=paths.split.stem)
        files = sorted(p.name for p in out.iterdir())
    return EvaluateResult(metrics, time.perf_counter() - started, files)


def _clean_float(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def build_metrics(noisy: SplitConfusion, clean: SplitConfusion | None, content: dict[str, Any], *,
                  n_patches: int, n_samples: int) -> dict[str, Any]:
    """metrics.json: ``test`` (against the labels), ``clean`` (against the clean truth, when any)."""

    def block(confusion: SplitConfusion) -> dict[str, Any]:
        values = {k: _clean_float(v) for k, v in confusion.headline().items()}
        values["n_pixels"] = int(confusion.full.matrix.sum())
        values["crop5_n_pixels"] = int(confusion.crop5.matrix.sum())
        return values

    metrics: dict[str, Any] = {"test": block(noisy)}
    if clean is not None:
        metrics["clean"] = block(clean)
    metrics["n_patches"] = n_patches
    metrics["n_samples"] = n_samples
    model_metrics = content.get("metrics") or {}
    metrics["model"] = {"epoch": int(content.get("epoch", 0)),
                        "val_weighted_f1": _clean_float(model_metrics.get("weighted_f1", float("nan")))}
    return metrics


# ---------------------------------------------------------------------------------------------
# tables


def per_class_table(noisy: SplitConfusion, clean: SplitConfusion | None, label_set: LabelSet) -> pd.DataFrame:
    """One row per model class but background: precision, recall, F1, support (and clean_*)."""
    rows = {"class": list(range(1, label_set.n_classes)), "name": list(label_set.class_names[1:])}
    for prefix, confusion in (("", noisy), ("clean_", clean)):
        if confusion is None:
            continue
        scores = confusion.full.compute()
        for key in ("precision", "recall", "f1", "support"):
            rows[f"{prefix}{key}"] = scores[key][1:]
        rows[f"{prefix}predicted"] = scores["matrix"].sum(0)[1:]
    return pd.DataFrame(rows)


def confusion_rows(matrix: np.ndarray, class_names: tuple[str, ...], per: int = 1000) -> pd.DataFrame:
    """Rows ``actual, predicted`` for DVC's ``confusion`` template, which counts rows.

    One row per pixel would not scale (millions of pixels), so each true class contributes
    ``round(per * share)`` rows per predicted class: the plot reads as per mille of the true
    class (the row-normalised matrix, i.e. recall on the diagonal). Exact counts are in
    ``confusion_matrix.csv``. Labels are ``NN name`` so that DVC's alphabetical sort keeps
    the class order.
    """
    labels = [f"{k:02d} {name}" for k, name in enumerate(class_names)]
    actual, predicted = [], []
    for t in range(1, len(class_names)):
        total = matrix[t].sum()
        if total == 0:
            continue
        for p, count in enumerate(np.rint(per * matrix[t] / total).astype(int)):
            actual += [labels[t]] * int(count)
            predicted += [labels[p]] * int(count)
    return pd.DataFrame({"actual": actual, "predicted": predicted})


def patch_table(noisy: SplitConfusion, clean: SplitConfusion | None, dataset: SubPatchDataset,
                patches_csv: Path | None) -> pd.DataFrame:
    """One row per test patch: pixels, correct pixels, accuracy, F1s (and clean_*), attributes."""
    rows: dict[str, list] = {"path": [r["path"] for r in dataset.records]}
    for prefix, confusion in (("", noisy), ("clean_", clean)):
        if confusion is None:
            continue
        matrices = confusion.patches.cpu().numpy()
        scores = [scores_from_confusion(m) for m in matrices]
        rows[f"{prefix}pixels"] = [s["n_pixels"] for s in scores]
        rows[f"{prefix}correct"] = [int(np.trace(m)) for m in matrices]
        for key in ("accuracy", "weighted_f1", "macro_f1"):
            rows[f"{prefix}{key}"] = [s[key] for s in scores]
    table = pd.DataFrame(rows)
    if patches_csv is not None and Path(patches_csv).is_file():
        attributes = pd.read_csv(patches_csv)
        keep = ["path"] + [c for c in PATCH_ATTRIBUTES if c in attributes.columns and c not in table.columns]
        table = table.merge(attributes[keep], on="path", how="left")
    return table


# ---------------------------------------------------------------------------------------------
# pictures (matplotlib, Agg: no display needed)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def class_colours(n_classes: int) -> np.ndarray:
    """RGB (n_classes, 3) floats: background light grey, then tab20's strong colours first."""
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    colours = [matplotlib.colors.to_rgb(BACKGROUND_COLOUR)]
    colours += [tab20[order[(k - 1) % 20]] for k in range(1, n_classes)]
    return np.asarray(colours, dtype=float)


def _compact(count: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(int(count))


def plot_confusion(matrix: np.ndarray, class_names: tuple[str, ...], path: Path, title: str) -> None:
    """Rows = true classes (background left out), columns = predicted classes; colour = share of the row."""
    plt = _pyplot()
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
    """Horizontal F1 bars per class (and clean-truth F1 beside them), support written at the end."""
    plt = _pyplot()
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
    """Stitched ``(H, W, 3)`` image in 0..1 of the middle month of the loader's months, and its caption."""
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
    """One row per patch: RGB of one month, truth, prediction (faded off parcels), errors; class legend."""
    plt = _pyplot()
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
        axes[row][0].set_ylabel(f"{name}\naccuracy {_fmt(info['accuracy'], 3)}\nweighted F1 "
                                f"{_fmt(info['weighted_f1'], 3)}", fontsize=8)
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


# ---------------------------------------------------------------------------------------------
# writing


def write_outputs(out: Path, *, metrics: dict[str, Any], noisy: SplitConfusion, clean: SplitConfusion | None,
                  label_set: LabelSet, dataset: SubPatchDataset, patches_csv: Path | None,
                  previews: list[tuple[int, np.ndarray, np.ndarray]], model_path: Path,
                  split_name: str = "test") -> None:
    """Every file of :data:`OUTPUTS` into ``out``."""
    out = Path(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    classes = per_class_table(noisy, clean, label_set)
    classes.to_csv(out / "per_class.csv", index=False, float_format="%.6g")
    matrix = noisy.full.matrix.cpu().numpy()
    confusion_rows(matrix, label_set.class_names).to_csv(out / "confusion.csv", index=False)
    names = list(label_set.class_names)
    pd.DataFrame(matrix, index=pd.Index(names, name="truth \\ prediction"), columns=names).to_csv(
        out / "confusion_matrix.csv")
    scores = patch_table(noisy, clean, dataset, patches_csv)
    scores.to_csv(out / "patch_scores.csv", index=False, float_format="%.6g")
    plot_confusion(matrix, label_set.class_names, out / "confusion.png",
                   f"Confusion matrix, {split_name} split ({metrics['test']['n_pixels']} parcel pixels)")
    plot_per_class_f1(classes, out / "per_class_f1.png", f"F1 per class, {split_name} split")
    plot_previews(previews, dataset, label_set, scores, out / "previews.png",
                  f"{split_name.capitalize()} patches: sub-patches stitched back to the full patch")
    (out / "report.md").write_text(report(metrics, classes, scores, model_path, split_name))


def report(metrics: dict[str, Any], classes: pd.DataFrame, scores: pd.DataFrame, model_path: Path,
           split_name: str = "test") -> str:
    """``report.md``: the headline, per-class table, pictures (relative links) and the worst patches."""
    test, clean = metrics["test"], metrics.get("clean")
    lines = [f"# Evaluation on the {split_name} split", "",
             f"Model `{model_path}` (epoch {metrics['model']['epoch']}, chosen on validation weighted F1 "
             f"{_fmt(metrics['model']['val_weighted_f1'])}); {metrics['n_patches']} {split_name} patches, "
             f"{metrics['n_samples']} sub-patches, {test['n_pixels']} parcel pixels (label 0 ignored). "
             f"`crop5`: the same on the sub-patch centres, a {CROP_BORDER}-pixel border removed.", "",
             "## Headline", ""]
    header = "| metric | labels |" + (" clean truth |" if clean else "")
    lines += [header, "|---|---:|" + ("---:|" if clean else "")]
    for key in HEADLINE:
        lines.append(f"| {key} | {_fmt(test[key])} |" + (f" {_fmt(clean[key])} |" if clean else ""))
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
        cells = [(_fmt(row[c], 3) if isinstance(row[c], float) else str(row[c])) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Files", ""] + [f"- `{name}`: {text}" for name, text in OUTPUTS.items()]
    return "\n".join(lines) + "\n"
