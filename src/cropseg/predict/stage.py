"""The predict stage: crop maps of any S4A patches, georeferenced, for GIS.

For every patch of a list (default: the test split) the trained model predicts every sub-patch
of the medians store (:class:`cropseg.nn.dataset.SubPatchDataset`, ``skip_empty=False``) in the
evaluate stage's batches and code path (:func:`cropseg.nn.scoring.predict`), so band 1 equals the
evaluate stage's predictions pixel for pixel; with precise BN (``model.norm: precise``) a
prediction does not depend on its batch anyway. The sub-patches are stitched back into the patch
and written on the patch's own grid (CRS and transform of its ``labels`` raster, see
:func:`cropseg.s4a.grid.read_patch_grid`) by :mod:`cropseg.predict.geotiff`. Outputs (one folder, replaced atomically)::

    patches/YYYY/TILE/YYYY_TILE_patch_XX_YY.tif   COG: band 1 class (colour table), band 2 confidence
    mosaics/YYYY_TILE.vrt  (+ .qml)               one mosaic per tile-year, QGIS style beside it
    legend.csv  legend.qml                        class values, names, colours; the QGIS style
    index.csv                                     patch, GeoTIFF, CRS, bounds, pixels per class

and a picture (``preview``, :mod:`cropseg.predict.mosaic`): the tile-year mosaic with the most
patches, read back through its VRT, beside its labels.
"""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.atomic import atomic_dir
from ..nn.checkpoint import load_model
from ..nn.dataset import SubPatchDataset
from ..core.plotting import class_colours
from ..s4a.grid import PatchGrid, read_patch_grid
from .geotiff import confidence_uint8, legend_csv, qgis_style, write_patch_cog, write_text, write_vrt
from .mosaic import plot_mosaic
from ..split.labels import LabelSet
from ..nn.precision import fix_cpu_threads, loader_workers, pick_device, resolve_precision
from ..s4a.netcdf import parse_patch_name
from ..nn.scoring import predict
from ..medians.subpatches import stitch

if TYPE_CHECKING:
    from ..core.params import Params



class PredictError(ValueError):
    """Patches that cannot be predicted as asked."""


@dataclass
class PredictResult:
    patches: int
    mosaics: list[str]
    seconds: float
    out: Path
    preview: Path | None = None
    class_pixels: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.patches / self.seconds if self.seconds else 0.0
        return (f"predict: {self.patches} patches -> {self.out}/patches, {len(self.mosaics)} tile-year mosaic(s) "
                f"({', '.join(self.mosaics)}), {self.seconds:.1f} s, {rate:.2f} patches/s")


def tile_year(relpath: str) -> str:
    """``YYYY_TILE`` of a patch path (the mosaic it belongs to)."""
    name = parse_patch_name(Path(relpath).name)
    return f"{name.year}_{name.tile}"


def cog_relpath(relpath: str) -> str:
    """``patches/YYYY/TILE/NAME.tif`` for the S4A path ``YYYY/TILE/NAME.nc`` (or a flat ``NAME.nc``)."""
    name = parse_patch_name(Path(relpath).name)
    return f"patches/{name.year}/{name.tile}/{name.stem}.tif"


class _PatchAssembler:
    """Collects the sub-patch predictions of each patch and hands a patch over once it is complete."""

    def __init__(self, dataset: SubPatchDataset):
        self.per_patch, self.sub_y, self.sub_x, self.window = (dataset.per_patch, dataset.sub_y, dataset.sub_x,
                                                               dataset.window)
        self.parts: dict[int, dict[str, np.ndarray]] = {}
        self.filled: dict[int, int] = defaultdict(int)

    def add(self, index: np.ndarray, **maps: np.ndarray) -> list[tuple[int, dict[str, np.ndarray]]]:
        done = []
        patch, within = np.divmod(index, self.per_patch)
        sub_y, sub_x = np.divmod(within, self.sub_x)
        for row, p in enumerate(patch.tolist()):
            if p not in self.parts:
                self.parts[p] = {k: np.zeros((self.sub_y, self.sub_x, self.window, self.window), v.dtype)
                                 for k, v in maps.items()}
            for key, values in maps.items():
                self.parts[p][key][sub_y[row], sub_x[row]] = values[row]
            self.filled[p] += 1
            if self.filled[p] == self.per_patch:
                done.append((p, {k: stitch(v) for k, v in self.parts.pop(p).items()}))
        return done


def _check_grids(patch_list: list[str], grids: dict[str, PatchGrid], dataset: SubPatchDataset) -> None:
    side_y, side_x = dataset.sub_y * dataset.window, dataset.sub_x * dataset.window
    bad = [f"{p} ({g.height}x{g.width})" for p, g in grids.items() if (g.height, g.width) != (side_y, side_x)]
    if bad:
        raise PredictError(f"the labels raster of {len(bad)} patch(es) is not the {side_y}x{side_x} pixels the "
                           f"medians store cut, e.g. {bad[0]}")


def predict_with_params(params: Params, *, model_path: Path, medians: Path, netcdf: Path, patch_list: list[str],
                        out: Path, preview: Path | None, batch_size: int | None = None) -> PredictResult:
    """:func:`predict_patches` with device, precision, batch size, workers and label set from params,
    as the evaluate stage takes them (``train.*``, ``loader.workers``, ``labels``): the one place the
    predict stage and ``python -m cropseg.predict.folder`` read them.

    Args:
        params: the pipeline's params.
        model_path, medians, netcdf, patch_list, out, preview: as :func:`predict_patches`.
        batch_size: sub-patches per forward pass; ``None``: ``train.physical_batch_size``.

    Returns:
        What :func:`predict_patches` returns.
    """
    return predict_patches(model_path=model_path, medians=medians, netcdf=netcdf, patch_list=patch_list, out=out,
                           preview=preview, device=params.train.device, precision=params.train.precision,
                           batch_size=batch_size or params.train.physical_batch_size,
                           workers=params.loader.workers, label_set_name=params.labels,
                           cpu_threads=params.train.cpu_threads)


def predict_patches(*, model_path: Path, medians: Path, netcdf: Path, patch_list: list[str], out: Path,
                    preview: Path | None, device: str = "auto", precision: str = "auto", batch_size: int = 16,
                    workers: int | None = 0, label_set_name: str | None = None, cpu_threads: int | None = None,
                    progress: bool = True) -> PredictResult:
    """Predict ``patch_list`` (paths under ``netcdf``, with medians in ``medians``) and write ``out``.

    Args:
        model_path: the trained model file.
        medians: the medians store holding the patches.
        netcdf: the fetched patches, for each patch's grid.
        patch_list: patch paths relative to ``netcdf`` (S4A file names).
        out: the output folder, replaced atomically.
        preview: where to draw the largest tile-year mosaic beside its labels; ``None`` for none.
        device: ``auto``, ``cpu`` or ``cuda`` (:func:`cropseg.nn.precision.pick_device`).
        precision: ``auto``, ``32``, ``bf16`` or ``fp16`` (:func:`cropseg.nn.precision.resolve_precision`).
        batch_size: sub-patches per batch (as the evaluate stage, so band 1 matches it).
        workers: DataLoader worker processes (None: chosen from the machine,
            :func:`cropseg.nn.precision.loader_workers`).
        label_set_name: ``params.labels``; the model must have been trained with it (not checked
            when ``None``).
        cpu_threads: torch threads on a CPU (``train.cpu_threads``, :func:`cropseg.nn.precision.fix_cpu_threads`).
        progress: show a progress bar.

    Returns:
        Patches, mosaics written, seconds, the output and preview paths, pixels per class.

    Raises:
        PredictError: ``patch_list`` is empty, the model's label set is not ``label_set_name``,
            or a patch's ``labels`` raster is not the size the medians store cut.
        ValueError: a path is not an S4A patch name, or ``model_path`` is not a model file.
        GridError: a patch's grid cannot be read (:func:`cropseg.s4a.grid.read_patch_grid`).
        DatasetError: the store does not hold the patches as the model's loader needs them
            (:class:`cropseg.nn.dataset.SubPatchDataset`).
    """
    from tqdm import tqdm

    from ..nn.scoring import sequential_loader

    started = time.perf_counter()
    if not patch_list:
        raise PredictError("no patches to predict")
    torch_device = pick_device(device)
    run_precision = resolve_precision(precision, torch_device)
    fix_cpu_threads(cpu_threads, torch_device)  # as training: the same map on any machine
    workers = loader_workers(workers, torch_device)
    model, content = load_model(model_path, torch_device)
    label_set = LabelSet.from_dict(content["labels"], str(model_path))
    if label_set_name is not None and label_set.name != label_set_name:
        raise PredictError(f"{model_path} was trained with label set {label_set.name!r} but params.labels is "
                           f"{label_set_name!r}: re-run the train stage")
    for relpath in patch_list:
        tile_year(relpath)  # a clear error for a file name that is not an S4A patch name, before any work
    grids = {relpath: read_patch_grid(netcdf / relpath) for relpath in patch_list}
    loader_cfg = content["loader"]
    dataset = SubPatchDataset(medians, patch_list, label_set, months=loader_cfg["months"],
                              normalize=loader_cfg["normalize"], skip_empty=False)
    _check_grids(patch_list, grids, dataset)
    names, colours = label_set.class_names, class_colours(label_set.n_classes)
    groups: dict[str, list[str]] = defaultdict(list)
    for relpath in patch_list:
        groups[tile_year(relpath)].append(relpath)
    shown = max(sorted(groups), key=lambda k: len(groups[k])) if preview is not None else None
    truth: dict[str, np.ndarray] = {}
    index_rows = []
    totals = np.zeros(label_set.n_classes, dtype=np.int64)

    with atomic_dir(out) as tmp:
        loader = sequential_loader(dataset, batch_size, workers=workers, pin_memory=torch_device.type == "cuda")
        assembler = _PatchAssembler(dataset)
        bar = tqdm(predict(model, loader, torch_device, run_precision), total=len(loader), desc="predict",
                   unit="batch", disable=not progress, leave=False)
        for batch, log_probs in bar:
            classes = log_probs.argmax(1).to(torch.uint8).cpu().numpy()
            confidence = confidence_uint8(log_probs.amax(1).float().exp().cpu().numpy())
            for p, maps in assembler.add(batch.index.cpu().numpy(), classes=classes, confidence=confidence,
                                         truth=batch.y.to(torch.uint8).cpu().numpy()):
                relpath = patch_list[p]
                write_patch_cog(tmp / cog_relpath(relpath), maps["classes"], maps["confidence"], grids[relpath],
                                names, colours, tags={"SOURCE_PATCH": relpath, "MODEL_EPOCH": str(content["epoch"]),
                                                      "LABEL_SET": label_set.name})
                counts = np.bincount(maps["classes"].ravel(), minlength=label_set.n_classes)[:label_set.n_classes]
                totals += counts
                bounds = grids[relpath].bounds
                index_rows.append([relpath, cog_relpath(relpath), tile_year(relpath), grids[relpath].crs.to_string(),
                                   *(f"{b:.3f}" for b in bounds), *counts.tolist()])
                if tile_year(relpath) == shown:
                    truth[relpath] = maps["truth"]
        mosaics = []
        for key in sorted(groups):
            sources = [("../" + cog_relpath(r), grids[r]) for r in groups[key]]
            write_vrt(tmp / "mosaics" / f"{key}.vrt", sources, names, colours)
            write_text(tmp / "mosaics" / f"{key}.qml", qgis_style(names, colours))
            mosaics.append(key)
        write_text(tmp / "legend.csv", legend_csv(names, colours))
        write_text(tmp / "legend.qml", qgis_style(names, colours))
        header = ["path", "geotiff", "tile_year", "crs", "left", "bottom", "right", "top",
                  *(f"pixels_{n}" for n in names)]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *index_rows])
        write_text(tmp / "index.csv", buffer.getvalue())
        if shown is not None:
            plot_mosaic(tmp / "mosaics" / f"{shown}.vrt", {r: grids[r].bounds for r in groups[shown]}, truth, names,
                        colours, preview, shown)
    return PredictResult(len(patch_list), mosaics, time.perf_counter() - started, out, preview,
                         {n: int(c) for n, c in zip(names, totals)})
