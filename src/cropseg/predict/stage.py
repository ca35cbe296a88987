"""The predict stage: crop maps of any S4A patches, georeferenced, for GIS, and a parcel table.

For every patch of a list (default: the test split) the trained model predicts the **whole patch
at once** (:func:`cropseg.nn.patch_inference.iter_patches`, the evaluate stage's code path, so its
metrics describe these maps): no sub-patch grid in the map (``docs/decisions.md``: seams measured).
Maps are written on the patch's own grid (CRS and transform of its ``labels`` raster, or of a 10 m
band in a file without labels, :func:`cropseg.s4a.grid.read_patch_grid`) by
:mod:`cropseg.predict.geotiff`. Where the S4A file has a ``parcels`` group, every parcel becomes a
row (:func:`cropseg.nn.parcels.parcel_table`: declared and predicted class, confidence,
``suspect``) with its polygon (:mod:`cropseg.predict.parcel_layer`). Outputs (one folder, replaced
atomically)::

    patches/YYYY/TILE/YYYY_TILE_patch_XX_YY.tif   COG: band 1 class (colour table), band 2 confidence
    mosaics/YYYY_TILE.vrt  (+ .qml)               one mosaic per tile-year, QGIS style beside it
    parcels/YYYY_TILE.gpkg (+ .csv, .qml)         one parcel layer per tile-year (where parcels exist)
    cropseg.qgs                                   QGIS project: every mosaic and parcel layer, relative paths
    legend.csv  legend.qml                        class values, names, colours; the QGIS style
    index.csv                                     patch, GeoTIFF, CRS, bounds, parcels, pixels per class

a picture (``preview``, :mod:`cropseg.predict.mosaic`): the tile-year mosaic with the most
patches, read back through its VRT, beside its labels; and ``metrics`` (JSON): the seam
measurement (:mod:`cropseg.predict.seams`) of the maps over all pixel pairs (``seams``), over pairs
inside one parcel (``seams_in_parcels``: no true class edge there) and of the labels themselves
(``seams_labels``: the excess on the grid that the data alone shows), and parcel counts and scores.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import pandas as pd

from ..core.atomic import atomic_dir, atomic_file
from ..nn.checkpoint import load_model
from ..nn.dataset import SubPatchDataset
from ..core.plotting import class_colours
from ..nn.parcels import SUSPECT_THRESHOLD, parcel_scores, parcel_table
from ..nn.patch_inference import iter_patches
from ..s4a.grid import PatchGrid, read_patch_grid
from ..s4a.parcels import read_parcels
from .geotiff import confidence_uint8, legend_csv, qgis_style, write_patch_cog, write_text, write_vrt
from .mosaic import plot_mosaic
from .parcel_layer import parcel_polygons, parcel_style, rank_suspects, write_parcel_layer
from .qgis_project import PROJECT, TileYearLayers, write_project
from .seams import SeamAccumulator
from ..split.labels import LabelSet
from ..nn.precision import fix_cpu_threads, loader_workers, pick_device, resolve_precision
from ..s4a.netcdf import parse_patch_name

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
    metrics: dict = field(default_factory=dict)

    def line(self) -> str:
        rate = self.patches / self.seconds if self.seconds else 0.0
        parcels = self.metrics.get("parcels", {})
        seams = self.metrics.get("seams", {})
        text = (f"predict: {self.patches} patches -> {self.out}/patches, {len(self.mosaics)} tile-year mosaic(s) "
                f"({', '.join(self.mosaics)})")
        if parcels.get("n_parcels"):
            text += (f", {parcels['n_parcels']} declared parcels (accuracy {parcels['accuracy']:.3f}, "
                     f"{parcels['suspect']} suspect)")
        if seams:
            text += (f", seams: disagreement {seams['edge_disagreement']:.4f} on the sub-patch grid vs "
                     f"{seams['inside_disagreement']:.4f} inside")
        return text + f", {self.seconds:.1f} s, {rate:.2f} patches/s"


def tile_year(relpath: str) -> str:
    """``YYYY_TILE`` of a patch path (the mosaic it belongs to)."""
    name = parse_patch_name(Path(relpath).name)
    return f"{name.year}_{name.tile}"


def cog_relpath(relpath: str) -> str:
    """``patches/YYYY/TILE/NAME.tif`` for the S4A path ``YYYY/TILE/NAME.nc`` (or a flat ``NAME.nc``)."""
    name = parse_patch_name(Path(relpath).name)
    return f"patches/{name.year}/{name.tile}/{name.stem}.tif"


def _check_grids(patch_list: list[str], grids: dict[str, PatchGrid], dataset: SubPatchDataset) -> None:
    side_y, side_x = dataset.sub_y * dataset.window, dataset.sub_x * dataset.window
    bad = [f"{p} ({g.height}x{g.width})" for p, g in grids.items() if (g.height, g.width) != (side_y, side_x)]
    if bad:
        raise PredictError(f"the labels raster of {len(bad)} patch(es) is not the {side_y}x{side_x} pixels the "
                           f"medians store cut, e.g. {bad[0]}")


def predict_with_params(params: Params, *, model_path: Path, medians: Path, netcdf: Path, patch_list: list[str],
                        out: Path, preview: Path | None, metrics: Path | None = None) -> PredictResult:
    """:func:`predict_patches` with device, precision, workers, label set and suspect threshold from
    params, as the evaluate stage takes them (``train.*``, ``loader.workers``, ``labels``,
    ``predict.suspect_threshold``): the one place the predict stage and ``python -m
    cropseg.predict.folder`` read them.

    Args:
        params: the pipeline's params.
        model_path, medians, netcdf, patch_list, out, preview, metrics: as :func:`predict_patches`.

    Returns:
        What :func:`predict_patches` returns.
    """
    return predict_patches(model_path=model_path, medians=medians, netcdf=netcdf, patch_list=patch_list, out=out,
                           preview=preview, metrics=metrics, device=params.train.device,
                           precision=params.train.precision, workers=params.loader.workers,
                           label_set_name=params.labels, cpu_threads=params.train.cpu_threads,
                           suspect_threshold=params.predict.suspect_threshold)


def predict_patches(*, model_path: Path, medians: Path, netcdf: Path, patch_list: list[str], out: Path,
                    preview: Path | None, metrics: Path | None = None, device: str = "auto",
                    precision: str = "auto", workers: int | None = 0, label_set_name: str | None = None,
                    cpu_threads: int | None = None, suspect_threshold: float = SUSPECT_THRESHOLD,
                    progress: bool = True) -> PredictResult:
    """Predict ``patch_list`` (paths under ``netcdf``, with medians in ``medians``) and write ``out``.

    Args:
        model_path: the trained model file.
        medians: the medians store holding the patches.
        netcdf: the fetched patches, for each patch's grid and parcel raster.
        patch_list: patch paths relative to ``netcdf`` (S4A file names).
        out: the output folder, replaced atomically.
        preview: where to draw the largest tile-year mosaic beside its labels; ``None`` for none.
        metrics: where to write the seam measurement and parcel scores (JSON); ``None`` for nowhere.
        device: ``auto``, ``cpu`` or ``cuda`` (:func:`cropseg.nn.precision.pick_device`).
        precision: ``auto``, ``32``, ``bf16`` or ``fp16`` (:func:`cropseg.nn.precision.resolve_precision`).
        workers: DataLoader worker processes (None: chosen from the machine,
            :func:`cropseg.nn.precision.loader_workers`).
        label_set_name: ``params.labels``; the model must have been trained with it (not checked
            when ``None``).
        cpu_threads: torch threads on a CPU (``train.cpu_threads``, :func:`cropseg.nn.precision.fix_cpu_threads`).
        suspect_threshold: a declared parcel predicted as another class with a mean probability
            above it is ``suspect``.
        progress: show a progress bar.

    Returns:
        Patches, mosaics written, seconds, the output and preview paths, pixels per class, metrics.

    Raises:
        PredictError: ``patch_list`` is empty, the model's label set is not ``label_set_name``,
            or a patch's raster is not the size the medians store cut.
        ValueError: a path is not an S4A patch name, or ``model_path`` is not a model file.
        GridError: a patch's grid cannot be read (:func:`cropseg.s4a.grid.read_patch_grid`).
        ParcelsError: a ``parcels`` group is not a parcel raster of the patch's size.
        DatasetError: the store does not hold the patches as the model's loader needs them
            (:class:`cropseg.nn.dataset.SubPatchDataset`).
    """
    from tqdm import tqdm

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
    seams = SeamAccumulator(dataset.window)  # the map; inside parcels; the labels themselves (the reference)
    seams_in_parcels, seams_labels = SeamAccumulator(dataset.window), SeamAccumulator(dataset.window)
    tables: dict[str, list[pd.DataFrame]] = defaultdict(list)
    shapes: dict[str, list] = defaultdict(list)

    with atomic_dir(out) as tmp:
        bar = tqdm(iter_patches(model, dataset, torch_device, run_precision, workers=workers), total=len(patch_list),
                   desc="predict", unit="patch", disable=not progress, leave=False)
        for maps in bar:
            relpath, grid = patch_list[maps.position], grids[patch_list[maps.position]]
            probs = maps.log_probs.float().exp().cpu().numpy()
            classes = probs.argmax(0).astype(np.uint8)
            labels = maps.labels.cpu().numpy()
            write_patch_cog(tmp / cog_relpath(relpath), classes, confidence_uint8(probs.max(0)), grid, names, colours,
                            tags={"SOURCE_PATCH": relpath, "MODEL_EPOCH": str(content["epoch"]),
                                  "LABEL_SET": label_set.name, "INFERENCE": "whole patch"})
            seams.add(classes)
            if labels.any():
                seams_labels.add(labels)
            parcels = read_parcels(netcdf / relpath, (grid.height, grid.width))
            if parcels is not None and parcels.any():
                seams_in_parcels.add(classes, parcels)
            n_parcels = 0
            if parcels is not None and parcels.any():
                table = parcel_table(parcels, labels, probs, threshold=suspect_threshold)
                polygons = parcel_polygons(parcels, grid.transform)
                table.insert(0, "patch", Path(relpath).stem)
                tables[tile_year(relpath)].append(table)
                shapes[tile_year(relpath)].extend(polygons[int(pid)] for pid in table.parcel_id)
                n_parcels = len(table)
            counts = np.bincount(classes.ravel(), minlength=label_set.n_classes)[:label_set.n_classes]
            totals += counts
            index_rows.append([relpath, cog_relpath(relpath), tile_year(relpath), grid.crs.to_string(),
                               *(f"{b:.3f}" for b in grid.bounds), n_parcels, *counts.tolist()])
            if tile_year(relpath) == shown:
                truth[relpath] = labels.astype(np.uint8)
        mosaics, project_layers = [], []
        for key in sorted(groups):
            sources = [("../" + cog_relpath(r), grids[r]) for r in groups[key]]
            write_vrt(tmp / "mosaics" / f"{key}.vrt", sources, names, colours)
            write_text(tmp / "mosaics" / f"{key}.qml", qgis_style(names, colours))
            mosaics.append(key)
            parcels_path = None
            if tables.get(key):
                table = rank_suspects(_with_names(pd.concat(tables[key], ignore_index=True), names))
                write_parcel_layer(tmp / "parcels" / f"{key}.gpkg", tmp / "parcels" / f"{key}.csv", table,
                                   shapes[key], grids[groups[key][0]].crs)
                write_text(tmp / "parcels" / f"{key}.qml", parcel_style())
                parcels_path = f"./parcels/{key}.gpkg"
            boxes = [grids[r].bounds for r in groups[key]]
            extent = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                      max(b[3] for b in boxes))
            project_layers.append(TileYearLayers(key, grids[groups[key][0]].crs, f"./mosaics/{key}.vrt",
                                                 parcels_path, extent))
        write_project(tmp / PROJECT, project_layers, qgis_style(names, colours), parcel_style())
        write_text(tmp / "legend.csv", legend_csv(names, colours))
        write_text(tmp / "legend.qml", qgis_style(names, colours))
        header = ["path", "geotiff", "tile_year", "crs", "left", "bottom", "right", "top", "parcels",
                  *(f"pixels_{n}" for n in names)]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows([header, *index_rows])
        write_text(tmp / "index.csv", buffer.getvalue())
        if shown is not None:
            plot_mosaic(tmp / "mosaics" / f"{shown}.vrt", {r: grids[r].bounds for r in groups[shown]}, truth, names,
                        colours, preview, shown)
    every = [t for key in sorted(tables) for t in tables[key]]
    measured = {name: acc.score().as_dict() for name, acc in (("seams", seams), ("seams_in_parcels", seams_in_parcels),
                                                               ("seams_labels", seams_labels)) if acc.measurable()}
    summary = {"patches": len(patch_list), **measured,  # no seams to measure on one-window patches
               "parcels": parcel_scores(every, label_set.n_classes) | {"suspect_threshold": suspect_threshold,
                                                                       "rows": int(sum(len(t) for t in every))}}
    if metrics is not None:
        with atomic_file(metrics, "w") as handle:
            handle.write(json.dumps(summary, indent=2) + "\n")
    return PredictResult(len(patch_list), mosaics, time.perf_counter() - started, out, preview,
                         {n: int(c) for n, c in zip(names, totals)}, summary)


def _with_names(table: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    """Class names beside the class numbers (what a GIS user reads)."""
    table = table.copy()
    lookup = np.asarray(names, dtype=object)
    table.insert(table.columns.get_loc("declared") + 1, "declared_name", lookup[table.declared.to_numpy()])
    table.insert(table.columns.get_loc("predicted") + 1, "predicted_name", lookup[table.predicted.to_numpy()])
    return table
