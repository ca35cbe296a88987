"""The per-patch table of the split stage: one row of facts per S4A patch.

Columns: ``path`` (under ``data/netcdf``), ``year``, ``tile``, ``patch_x``, ``patch_y`` (from
the file name), ``country``, ``n_dates`` (acquisitions, from ``index.csv``), ``size`` (10 m
pixels per side), the footprint (``epsg`` and ``x_min .. y_max`` in the patch's UTM CRS, from the
``labels`` x/y pixel centres plus half a pixel; ``lon_min .. lat_max`` its EPSG:4326 bounding box
through pyproj), ``elevation_mean`` / ``elevation_std`` / ``elevation_median`` (metres, over the
DEM pixels meeting the footprint; empty when no DEM covers it), ``n_pixels``, ``parcel_pixels``
(label > 0), ``largest_class`` / ``largest_class_pixels`` (the most frequent non-background code,
0 when the patch has none) and ``pixels_<code>`` for every class code found in any patch.

Rows are computed in parallel over patches; each worker reads one label map at a time, so memory
does not grow with the dataset. Elevation comes from the first GeoTIFF (sorted by path) whose
bounds contain the whole footprint, else from every GeoTIFF meeting it (a patch on a DEM tile
edge); any CRS, nodata and non-finite pixels ignored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer

from ..core.executor import ordered_map
from ..s4a.grid import GridError, read_label_grid
from ..s4a.netcdf import PatchInfo

BASE_COLUMNS = (
    "path", "year", "tile", "patch_x", "patch_y", "country", "n_dates", "size",
    "epsg", "x_min", "y_min", "x_max", "y_max", "lon_min", "lat_min", "lon_max", "lat_max",
    "elevation_mean", "elevation_std", "elevation_median",
    "n_pixels", "parcel_pixels", "largest_class", "largest_class_pixels",
)
CLASS_PREFIX = "pixels_"
LONLAT_DECIMALS = 7
ELEVATION_DECIMALS = 3


class PatchTableError(RuntimeError):
    """A patch or DEM file cannot be read into the table; names the file."""


@dataclass(frozen=True)
class DemTile:
    """A GeoTIFF of elevation: its path, CRS (WKT) and bounds in that CRS."""

    path: str
    crs: str
    bounds: tuple[float, float, float, float]


def find_dem_tiles(dem_dir: str | Path | None) -> list[DemTile]:
    """Every ``*.tif`` under ``dem_dir`` (sorted), with CRS and bounds; [] when there is none.

    Raises:
        PatchTableError: a GeoTIFF cannot be read or has no CRS.
    """
    if dem_dir is None or not Path(dem_dir).is_dir():
        return []
    import rasterio  # imported here: only needed when there is a DEM

    tiles = []
    for path in sorted(Path(dem_dir).rglob("*.tif"), key=lambda p: p.as_posix()):
        try:
            with rasterio.open(path) as dataset:
                if dataset.crs is None:
                    raise PatchTableError(f"{path}: GeoTIFF without a CRS")
                tiles.append(DemTile(str(path), dataset.crs.to_wkt(), tuple(dataset.bounds)))
        except rasterio.errors.RasterioIOError as error:
            raise PatchTableError(f"{path}: not a readable GeoTIFF ({error})") from None
    return tiles


@lru_cache(maxsize=32)
def _open_dem(path: str):
    import rasterio

    return rasterio.open(path)


def _intersects(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _contains(outer: tuple, inner: tuple) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _dem_values(tile: DemTile, bounds: tuple[float, float, float, float]) -> np.ndarray:
    """Valid elevation pixels of ``tile`` meeting ``bounds`` (in the tile's CRS)."""
    from rasterio.windows import Window

    dataset = _open_dem(tile.path)
    inverse = ~dataset.transform
    cols, rows = zip(*(inverse @ (x, y) for x in (bounds[0], bounds[2]) for y in (bounds[1], bounds[3])))
    col0, col1 = max(0, math.floor(min(cols))), min(dataset.width, math.ceil(max(cols)))
    row0, row1 = max(0, math.floor(min(rows))), min(dataset.height, math.ceil(max(rows)))
    if col1 <= col0 or row1 <= row0:
        return np.empty(0)
    data = dataset.read(1, window=Window(col0, row0, col1 - col0, row1 - row0), masked=True)
    values = np.ma.compressed(data).astype(np.float64)
    return values[np.isfinite(values)]


def elevation_stats(epsg: int, bounds: tuple[float, float, float, float],
                    tiles: list[DemTile]) -> tuple[float, float, float]:
    """(mean, std, median) of the DEM over a UTM footprint; NaNs when no DEM pixel meets it.

    The first tile that contains the whole footprint is read alone; otherwise every tile meeting
    it is, and their pixels are pooled.

    Args:
        epsg: the footprint's UTM EPSG code.
        bounds: ``(x_min, y_min, x_max, y_max)`` in that CRS.
        tiles: the DEM tiles (:func:`find_dem_tiles`).
    """
    from rasterio.warp import transform_bounds

    nan = (math.nan, math.nan, math.nan)
    if not tiles:
        return nan
    projected = {}
    for tile in tiles:
        if tile.crs not in projected:
            projected[tile.crs] = transform_bounds(f"EPSG:{epsg}", tile.crs, *bounds, densify_pts=21)
    covering = [t for t in tiles if _contains(t.bounds, projected[t.crs])]
    chosen = covering[:1] or [t for t in tiles if _intersects(t.bounds, projected[t.crs])]
    parts = [_dem_values(tile, projected[tile.crs]) for tile in chosen]
    values = np.concatenate(parts) if parts else np.empty(0)
    if values.size == 0:
        return nan
    return float(values.mean()), float(values.std()), float(np.median(values))


def _largest(counts: dict[int, int]) -> tuple[int, int]:
    crops = [(count, -code) for code, count in counts.items() if code != 0 and count > 0]
    if not crops:
        return 0, 0
    count, negative_code = max(crops)
    return -negative_code, count


def patch_row(info: PatchInfo, root: str | Path, tiles: list[DemTile]) -> tuple[dict, dict[int, int]]:
    """Facts of one patch and its pixel count per class code (reads its label map only).

    Args:
        info: the patch's ``index.csv`` row.
        root: the folder ``info.path`` is relative to.
        tiles: the DEM tiles, for the elevation columns ([] gives NaNs).

    Returns:
        ``(row, classes)``: the table's base columns for the patch, and pixels per S4A code.

    Raises:
        PatchTableError: the patch cannot be placed (:func:`cropseg.s4a.grid.read_label_grid`).
    """
    try:
        grid = read_label_grid(Path(root) / info.path, labels=True)
    except GridError as error:
        raise PatchTableError(str(error)) from None
    epsg, bounds, labels = grid.epsg, grid.bounds, grid.labels
    lonlat = grid.lonlat()
    elevation = elevation_stats(epsg, bounds, tiles)
    codes, counts = np.unique(labels, return_counts=True)
    classes = {int(c): int(n) for c, n in zip(codes, counts)}
    largest_class, largest_pixels = _largest(classes)
    row = {
        "path": info.path, "year": info.year, "tile": info.tile, "patch_x": info.patch_x,
        "patch_y": info.patch_y, "country": info.country, "n_dates": info.n_dates,
        "size": int(labels.shape[0]), "epsg": epsg,
        "x_min": bounds[0], "y_min": bounds[1], "x_max": bounds[2], "y_max": bounds[3],
        **{k: round(v, LONLAT_DECIMALS) for k, v in zip(("lon_min", "lat_min", "lon_max", "lat_max"), lonlat)},
        **{f"elevation_{k}": round(v, ELEVATION_DECIMALS) for k, v in zip(("mean", "std", "median"), elevation)},
        "n_pixels": int(labels.size), "parcel_pixels": int(labels.size - classes.get(0, 0)),
        "largest_class": largest_class, "largest_class_pixels": largest_pixels,
    }
    return row, classes


def _frame(rows: list[dict], classes: list[dict[int, int]]) -> pd.DataFrame:
    codes = sorted({code for per_patch in classes for code in per_patch})
    table = pd.DataFrame(rows, columns=list(BASE_COLUMNS))
    counts = np.zeros((len(rows), len(codes)), dtype=np.int64)
    position = {code: i for i, code in enumerate(codes)}
    for r, per_patch in enumerate(classes):
        for code, count in per_patch.items():
            counts[r, position[code]] = count
    class_frame = pd.DataFrame(counts, columns=[f"{CLASS_PREFIX}{c}" for c in codes])
    return pd.concat([table, class_frame], axis=1).sort_values("path", kind="stable").reset_index(drop=True)


def build_table(infos: list[PatchInfo], root: str | Path, dem_dir: str | Path | None = None,
                workers: int = 1, progress: bool = True) -> pd.DataFrame:
    """The per-patch table of ``infos`` (patches under ``root``), sorted by path.

    Args:
        infos: the patches (``index.csv`` rows).
        root: the folder their paths are relative to.
        dem_dir: ``fetch_dem``'s output; no elevation (NaN columns) when ``None`` or absent.
        workers: processes reading the patches.
        progress: show a progress bar.

    Returns:
        The base columns and one ``pixels_<code>`` column per S4A code found.

    Raises:
        PatchTableError: a patch or a DEM tile cannot be read.
    """
    tiles = find_dem_tiles(dem_dir)
    function = partial(patch_row, root=str(root), tiles=tiles)
    results = ordered_map(function, infos, workers, desc="patch table", progress=progress)
    return _frame([r for r, _ in results], [c for _, c in results])


def class_columns(table: pd.DataFrame) -> list[str]:
    """The ``pixels_<code>`` columns, in code order."""
    return [c for c in table.columns if c.startswith(CLASS_PREFIX)]


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """CSV with a fixed layout: ``\\n`` line ends, missing values empty, floats as Python repr."""
    table.to_csv(path, index=False, lineterminator="\n", na_rep="")


def footprints_geojson(table: pd.DataFrame, properties: tuple[str, ...] = ("path", "year", "tile",
                       "patch_x", "patch_y", "split")) -> dict:
    """GeoJSON FeatureCollection (EPSG:4326) of the patches' footprint polygons (UTM corners).

    Args:
        table: the per-patch table (``epsg`` and ``x_min .. y_max`` columns).
        properties: columns copied into each feature's properties, where the table has them.
    """
    features = []
    transformers: dict[int, Transformer] = {}
    for row in table.itertuples(index=False):
        epsg = int(row.epsg)
        if epsg not in transformers:
            transformers[epsg] = Transformer.from_crs(epsg, 4326, always_xy=True)
        xs = [row.x_min, row.x_max, row.x_max, row.x_min, row.x_min]
        ys = [row.y_min, row.y_min, row.y_max, row.y_max, row.y_min]
        lons, lats = transformers[epsg].transform(xs, ys)
        ring = [[round(float(lon), LONLAT_DECIMALS), round(float(lat), LONLAT_DECIMALS)] for lon, lat in zip(lons, lats)]
        props = {}
        for name in properties:
            if name in table.columns:
                value = getattr(row, name)
                props[name] = value.item() if isinstance(value, np.generic) else value
        features.append({"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return {"type": "FeatureCollection", "features": features}


def write_geojson(table: pd.DataFrame, path: str | Path) -> None:
    with open(path, "w") as handle:
        json.dump(footprints_geojson(table), handle, indent=None, separators=(",", ":"))
        handle.write("\n")
