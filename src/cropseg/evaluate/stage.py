"""The evaluate stage: the trained model on the test split, as DVC metrics, DVC plots, pictures and a report.

One pass over the test patches, each predicted whole (:func:`cropseg.nn.patch_inference.iter_patches`,
the predict stage's code path, so these scores describe its maps: no sub-patch seams), accumulates,
on the device, per sub-patch as before (the sample numbering of :mod:`cropseg.nn.dataset`):

* confusion matrices over parcel pixels (label 0 ignored), all of them and the sub-patch centres
  with a 5-pixel border removed (``crop5``), and one per patch (:class:`SplitConfusion`);
* the same against the synthetic generator's clean labels (``data/netcdf/truth/clean_labels``),
  when every test patch has one: what a perfect annotator would have said;
* the predictions of a few preview patches;
* parcel-level accuracy and F1 against the declarations (``metrics.json`` ``parcels``), one vote
  per parcel (:func:`cropseg.nn.parcels.parcel_table`), where the S4A files carry parcels.

The learning-curve snapshots (:mod:`cropseg.evaluate.learning_curve`) are still scored per
sub-patch: the cheaper path (batched), used only to compare training runs with each other.

Everything is written to one folder (replaced atomically), see :data:`OUTPUTS`; the pictures are
drawn by :mod:`cropseg.evaluate.figures`, the page by :mod:`cropseg.evaluate.page`. The metrics themselves
(loop, confusion matrices) live in :mod:`cropseg.nn.scoring`, shared with the training's validation.
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

from ..core.atomic import atomic_dir
from ..nn.checkpoint import load_model
from ..nn.dataset import SubPatchDataset, read_split_list
from .figures import plot_confusion, plot_per_class_f1, plot_previews
from ..split.labels import LabelSet
from .learning_curve import CURVE_COLUMNS, curve_metrics, score_model, score_snapshots
from ..nn.metrics import scores_from_confusion
from ..nn.precision import fix_cpu_threads, loader_workers, pick_device, resolve_precision
from .page import fmt, report_page
from ..nn.parcels import SUSPECT_THRESHOLD, parcel_scores, parcel_table
from ..nn.patch_inference import as_samples, iter_patches
from ..nn.scoring import SplitConfusion, sequential_loader
from ..s4a.parcels import read_parcels
from ..nn.snapshots import read_index
from ..medians.subpatches import PatchCanvas, cut

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
    "curve.csv": "test scores of the train stage's snapshots vs samples seen (clean labels where they exist; "
                 "header only without snapshots)",
}
PATCH_ATTRIBUTES = ("year", "tile", "patch_x", "patch_y", "country", "n_dates", "elevation_mean", "elevation_std",
                    "lon_min", "lat_min", "lon_max", "lat_max", "parcel_pixels", "largest_class")


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
    snapshots: Path | None = Path("models/snapshots")
    holdout_model: Path | None = Path("models/holdout.pt")  # the irreducible-loss model, scored when present
    netcdf: Path | None = None  # the S4A root (stage: data/netcdf): parcel-level scores where files carry parcels


@dataclass
class EvaluateResult:
    metrics: dict[str, Any]
    seconds: float
    files: list[str] = field(default_factory=list)

    def line(self) -> str:
        test, clean = self.metrics["test"], self.metrics.get("clean")
        text = (f"evaluate: {self.metrics['n_patches']} test patches, {test['n_pixels']} parcel pixels: "
                f"accuracy {fmt(test['accuracy'])}, weighted F1 {fmt(test['weighted_f1'])}, "
                f"macro F1 {fmt(test['macro_f1'])}")
        if clean:
            text += f" (clean truth: weighted F1 {fmt(clean['weighted_f1'])})"
        parcels = self.metrics.get("parcels")
        if parcels:
            text += (f"; {parcels['n_parcels']} parcels: accuracy {fmt(parcels['accuracy'])}, "
                     f"weighted F1 {fmt(parcels['weighted_f1'])}")
        if "curve" in self.metrics:
            curve = self.metrics["curve"]
            text += (f"; learning curve of {curve['points']} snapshots: AUC {fmt(curve['auc_weighted_f1'])}, "
                     f"final {fmt(curve['final_weighted_f1'])} ({curve['against']})")
        return text + f", {self.seconds:.1f} s"


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
             precision: str = "auto", batch_size: int = 16, workers: int | None = 0, previews: int = 4,
             cpu_threads: int | None = None, suspect_threshold: float = SUSPECT_THRESHOLD,
             progress: bool = True) -> EvaluateResult:
    """Evaluate ``paths.model`` on the split list ``paths.split`` and write everything to ``paths.out``.

    The loader settings (months, normalisation) and the label set come from the model file;
    ``label_set_name`` (``params.labels``), when given, must match the model's. Every sub-patch
    of each test patch is predicted (sub-patches without parcel pixels add nothing to the metrics
    but complete the previews). ``suspect_threshold`` (``params.predict.suspect_threshold``) decides the
    ``parcels.suspect`` count, as in the predict stage's parcel layer.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    torch_device = pick_device(device)
    run_precision = resolve_precision(precision, torch_device)
    fix_cpu_threads(cpu_threads, torch_device)  # as training: the same scores on any machine
    workers = loader_workers(workers, torch_device)
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

    parcel_tables = []
    patches = tqdm(iter_patches(model, dataset, torch_device, run_precision, workers=workers), total=n_patches,
                   desc="evaluate", unit="patch", disable=not progress, leave=False)
    for maps in patches:  # whole patches, as the predict stage maps them: these metrics describe its maps
        index = torch.arange(dataset.per_patch, device=torch_device) + maps.position * dataset.per_patch
        prediction = as_samples(maps.log_probs.argmax(0), dataset.window)
        target = as_samples(maps.labels, dataset.window)
        noisy.update(index, prediction, target)
        if clean is not None:
            clean.update(index, prediction, clean_truth.labels(index))
        if shown:
            canvas.add(index, prediction)
            truth_canvas.add(index, target)
        if paths.netcdf is not None:
            parcels = read_parcels(paths.netcdf / dataset.records.paths[maps.position], tuple(maps.labels.shape))
            if parcels is not None and parcels.any():
                parcel_tables.append(parcel_table(parcels, maps.labels.cpu().numpy(),
                                                  maps.log_probs.float().exp().cpu().numpy(),
                                                  threshold=suspect_threshold))
    noisy.sync()
    if clean is not None:
        clean.sync()

    metrics = build_metrics(noisy, clean, content, n_patches=n_patches, n_samples=len(dataset))
    if parcel_tables:
        metrics["parcels"] = parcel_scores(parcel_tables, n_classes)
    curve = pd.DataFrame(columns=CURVE_COLUMNS)
    if paths.snapshots is not None and read_index(paths.snapshots):
        curve = score_snapshots(paths.snapshots, dataset, clean_truth.labels if clean_truth else None,
                                device=torch_device, precision=run_precision, batch_size=batch_size, workers=workers,
                                progress=progress)
        metrics["curve"] = curve_metrics(curve, "clean" if clean_truth else "labels")
    if paths.holdout_model is not None and paths.holdout_model.is_file():
        loader = sequential_loader(dataset, batch_size, workers=workers, pin_memory=torch_device.type == "cuda")
        metrics["holdout_model"] = score_model(paths.holdout_model, loader, n_classes,
                                               clean_truth.labels if clean_truth else None, device=torch_device,
                                               precision=run_precision)
        metrics["holdout_model"] |= {"against": "clean" if clean_truth else "labels"}
    with atomic_dir(paths.out) as out:
        curve.to_csv(out / "curve.csv", index=False, float_format="%.6g")
        write_outputs(out, metrics=metrics, noisy=noisy, clean=clean, label_set=label_set, dataset=dataset,
                      patches_csv=paths.patches, previews=[(p, truth_canvas.full(p), canvas.full(p)) for p in shown],
                      model_path=paths.model, split_name=paths.split.stem)
        files = sorted(p.name for p in out.iterdir())
    return EvaluateResult(metrics, time.perf_counter() - started, files)


def _clean_float(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)



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
    (out / "report.md").write_text(report_page(metrics, classes, scores, model_path, split_name, OUTPUTS))
