"""Writing a synthetic patch (:mod:`cropseg.fetch.synthetic`) as files: the S4A netCDF and its truth.

The patch goes into the published S4A layout (:mod:`cropseg.s4a.netcdf`: root attributes, one group
per band, ``labels`` and ``parcels``, the raster attributes ``xarray.open_rasterio`` left on each
variable), so every later stage reads synthetic and real patches by one code path. What the
generator knows and the files must not carry (the clean labels, and per 61x61 window the labelled
pixels per (label, clean) code pair) goes into ``truth/`` beside them. Kept apart from the
generator: the layout follows the published files, the data model follows the experiments, and
neither should be edited for the other's sake. Nothing here reads a clock, so the same parameters
write the same bytes.
"""

from __future__ import annotations

import csv
from pathlib import Path

import netCDF4
import numpy as np

from ..core.params import SyntheticData
from ..s4a.geo import tile_grid
from ..s4a.tiles import country_of
from ..s4a.bands import BANDS
from ..s4a.netcdf import PatchName
from .synthetic import S4A_PATCH_SIZE, TRUTH_WINDOW, PatchPlan, SyntheticPatch, generate_patch

TRUTH_DIR = "truth"
TRUTH_COLUMNS = ("path", "window_y", "window_x", "label_code", "clean_code", "pixels")


def _axis(start: float, step: float, count: int) -> np.ndarray:
    return start + step * (np.arange(count) + 0.5)


def root_attributes(name: PatchName) -> dict[str, str]:
    """The root attributes of a published S4A file (see :mod:`cropseg.s4a.netcdf`), for a synthetic patch.

    ``creation_date`` is derived from the patch year (never the clock), so that the same
    parameters write the same bytes; ``title`` etc. say where the file came from.
    """
    return {
        "title": "S4A Patch Dataset (cropseg synthetic)",
        "authors": "cropseg synthetic S4A generator",
        "patch_full_name": name.stem,
        "patch_year": str(name.year),  # a string, as on the dataset card
        "patch_name": f"patch_{name.x:02d}_{name.y:02d}",
        "patch_country_code": country_of(name.tile),
        "patch_tile": name.tile,
        "creation_date": f"01 Jan {name.year + 1}",
        "references": "Synthetic data in the layout of Sykas et al. (2022), doi:10.1109/JSTARS.2022.3164771.",
        "institution": "cropseg",
        "version": "synthetic-1",
    }


def raster_attributes(crs: str, res: float, x0: float, y0: float) -> dict[str, object]:
    """What ``xarray.open_rasterio`` attaches to a raster and ``to_netcdf`` writes on the variable."""
    return {
        "transform": np.array([res, 0, x0, 0, -res, y0], "f8"),
        "crs": crs,
        "res": np.array([res, res], "f8"),
        "is_tiled": np.int64(0),
        "nodatavals": np.array([np.nan]),
        "scales": np.array([1.0]),
        "offsets": np.array([0.0]),
        "AREA_OR_POINT": "Area",
        "coordinates": "band",
    }


def _band_scalar(group: netCDF4.Group) -> None:
    """The scalar ``band`` coordinate left by selecting one band of a rasterio DataArray."""
    group.createVariable("band", "i8", ())[...] = 1


def write_patch_netcdf(patch: SyntheticPatch, path: Path) -> None:
    """Write one patch in the published S4A layout (see :mod:`cropseg.s4a.netcdf`): root attributes,
    one group per band, ``labels`` and ``parcels``, raster attributes on each variable.

    ``time`` is encoded as xarray encodes day-aligned dates: int64 ``days since <first date>``,
    calendar ``proleptic_gregorian``.
    """
    name = patch.plan.name
    grid = tile_grid(name.tile)
    size = patch.labels.shape[0]
    # a patch smaller than 366 px sits in the corner of the 366 px cell its name points at
    x0 = grid.x0 + name.x * S4A_PATCH_SIZE * 10
    y0 = grid.y0 - name.y * S4A_PATCH_SIZE * 10
    first = patch.plan.dates[0].astype("datetime64[D]")
    days = (patch.plan.dates.astype("datetime64[D]") - first).astype("int64")
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncatts(root_attributes(name))
        for band, values in patch.bands.items():
            res = BANDS[band]
            group = ds.createGroup(band)
            side = values.shape[1]
            group.createDimension("time", values.shape[0])
            group.createDimension("y", side)
            group.createDimension("x", side)
            time = group.createVariable("time", "i8", ("time",))
            time.units, time.calendar = f"days since {first} 00:00:00", "proleptic_gregorian"
            time[:] = days
            group.createVariable("y", "f8", ("y",))[:] = _axis(y0, -res, side)
            group.createVariable("x", "f8", ("x",))[:] = _axis(x0, res, side)
            _band_scalar(group)
            variable = group.createVariable(band, values.dtype, ("time", "y", "x"), zlib=True, complevel=1,
                                            shuffle=True, chunksizes=(1, side, side))
            variable.setncatts(raster_attributes(grid.crs_attr, res, x0, y0))
            variable[:] = values
        for group_name, values in (("labels", patch.labels), ("parcels", patch.parcels)):
            group = ds.createGroup(group_name)
            group.createDimension("y", size)
            group.createDimension("x", size)
            group.createVariable("y", "f8", ("y",))[:] = _axis(y0, -10, size)
            group.createVariable("x", "f8", ("x",))[:] = _axis(x0, 10, size)
            _band_scalar(group)
            variable = group.createVariable(group_name, "u4", ("y", "x"), zlib=True, complevel=1, shuffle=True)
            variable.setncatts(raster_attributes(grid.crs_attr, 10, x0, y0))
            variable[:] = values


def truth_rows(patch: SyntheticPatch) -> list[tuple]:
    """Per 61x61 window: labelled pixels (label > 0) per (label code, clean code) pair.

    Counted in S4A-code space, so that a label set can map both codes to its model classes
    (:func:`cropseg.selection.selector.truth_per_sample`): a code it maps to background is not a labelled
    pixel for the model, and two codes it merges are not noise.
    """
    rows = []
    size = patch.labels.shape[0]
    for wy in range(size // TRUTH_WINDOW):
        for wx in range(size // TRUTH_WINDOW):
            window = np.s_[wy * TRUTH_WINDOW:(wy + 1) * TRUTH_WINDOW, wx * TRUTH_WINDOW:(wx + 1) * TRUTH_WINDOW]
            labels, clean = patch.labels[window].ravel(), patch.clean_labels[window].ravel()
            labelled = labels > 0
            pairs, counts = np.unique(np.stack([labels[labelled], clean[labelled]], axis=1), axis=0,
                                      return_counts=True)
            rows += [(patch.plan.name.relpath, wy, wx, int(label), int(true), int(count))
                     for (label, true), count in zip(pairs, counts)]
    return rows


def write_patch(cfg: SyntheticData, plan: PatchPlan, root: Path) -> list[tuple]:
    """Generate and write one patch and its clean labels; return its truth rows."""
    patch = generate_patch(cfg, plan)
    target = root / plan.name.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    write_patch_netcdf(patch, target)
    clean = root / TRUTH_DIR / "clean_labels" / f"{plan.name.stem}.npy"
    clean.parent.mkdir(parents=True, exist_ok=True)
    np.save(clean, patch.clean_labels)
    return truth_rows(patch)


def write_truth(rows: list[tuple], root: Path) -> None:
    """``truth/truth.csv`` beside the S4A files (never inside them)."""
    path = root / TRUTH_DIR / "truth.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRUTH_COLUMNS)
        writer.writerows(sorted(rows))
