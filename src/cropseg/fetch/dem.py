"""The ``fetch_dem`` stage: elevation covering the footprints of the S4A patches in ``data/netcdf``.

Sources (params section ``dem``):

``synthetic`` (default, offline)
    one GeoTIFF ``synthetic.tif`` (EPSG:4326, float32, nodata -9999, 1 arc-second pixels, LZW,
    256x256 tiles) over the union bounding box of all footprints plus
    :data:`cropseg.fetch.terrain.MARGIN_DEG`. The terrain (:mod:`cropseg.fetch.terrain`) is a deterministic
    function of (lon, lat, ``dem.seed``) alone: a sum of smooth, compactly supported bumps (broad
    massifs, elongated ridges, small hills) whose centres, heights, widths and orientations are
    drawn per cell of three global lattices, evaluated exactly on a global 6 arc-second node grid
    and bilinearly interpolated to the global 1 arc-second pixel grid. Pixels are addressed by
    global integer indices, so an area covered by two different patch sets gets bit-identical
    values; heights are clipped to 0..2000 m. Only the 256x256 blocks that meet a footprint (plus
    margin) are computed; other blocks are left sparse and read as nodata, so the cost grows with
    the area of the patches, not with the area of their bounding box.

``copernicus``
    the 1x1 degree Copernicus GLO-30 tiles (public, no account) that intersect the footprints,
    downloaded over HTTPS into ``dem.copernicus.cache_dir`` by :mod:`cropseg.core.download` (retries
    with exponential backoff, interrupted downloads resumed with HTTP Range from ``NAME.tif.part``),
    validated with rasterio and hard-linked (copied across file systems) into the output. A tile
    the server answers with 404 does not exist (open sea) and is recorded as ``missing``.

``none``
    no elevation; only the manifest.

Whatever the source, ``tiles.csv`` (``name,status,path``; status ``synthetic``, ``downloaded`` or
``missing``; sorted by name; path relative to the output folder, empty when missing) lists what
was made; every ``*.tif`` of the output folder is elevation in metres.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..core.download import DownloadError, NotFound, download_resumable
from ..core.files import link_or_copy
from ..s4a.grid import GridError, read_label_grid
from ..core.params import CopernicusDem, Dem
from ..s4a.netcdf import INDEX_FILE, read_index
from .terrain import Footprint, write_terrain

MANIFEST = "tiles.csv"
MANIFEST_COLUMNS = ("name", "status", "path")
SYNTHETIC_NAME = "synthetic"
COPERNICUS_PREFIX = "Copernicus_DSM_COG_10"


class DemError(RuntimeError):
    """The DEM cannot be made (missing index, unreadable patch, failed or corrupt download)."""


@dataclass(frozen=True)
class TileRecord:
    """One row of ``tiles.csv``."""

    name: str
    status: str  # synthetic | downloaded | missing
    path: str  # relative to the output folder; "" when missing


@dataclass
class DemSummary:
    source: str
    patches: int
    tiles: list[TileRecord] = field(default_factory=list)
    cached: int = 0  # copernicus tiles found complete in the cache (not downloaded again)
    seconds: float = 0.0

    def line(self) -> str:
        n = len(self.tiles)
        text = f"fetch_dem: {self.source}, {n} tile{'' if n == 1 else 's'}"
        if self.source == "copernicus":
            downloaded = sum(t.status == "downloaded" for t in self.tiles)
            missing = sum(t.status == "missing" for t in self.tiles)
            text += f" ({downloaded - self.cached} downloaded, {self.cached} cached, {missing} missing)"
        return f"{text}, {self.patches} patches, {self.seconds:.1f} s"


# --------------------------------------------------------------------------- footprints


def patch_footprint(path: str | Path) -> Footprint:
    """(lon_min, lat_min, lon_max, lat_max) of an S4A patch, from its ``labels`` grid.

    ``x``/``y`` are pixel centres in the UTM CRS of the ``crs`` attribute of the ``labels``
    variable (as published; else of its group); the footprint extends half a pixel beyond the
    outer centres. Read by :func:`cropseg.s4a.grid.read_label_grid`, as the split's patch table.

    Raises:
        DemError: the patch cannot be placed (the message names the file and what is missing).
    """
    try:
        return read_label_grid(path).lonlat()
    except GridError as error:
        raise DemError(str(error)) from None


def patch_footprints(netcdf_dir: str | Path, progress: bool = True) -> dict[str, Footprint]:
    """Footprint of every patch listed in ``netcdf_dir/index.csv``, keyed by its index path.

    Raises:
        DemError: there is no ``index.csv``, or a patch cannot be placed.
    """
    netcdf_dir = Path(netcdf_dir)
    index = netcdf_dir / INDEX_FILE
    if not index.is_file():
        raise DemError(f"{index}: patch index not found (run the fetch_s4a stage first)")
    infos = read_index(index)
    return {info.path: patch_footprint(netcdf_dir / info.path)
            for info in tqdm(infos, desc="footprints", unit="patch", disable=not progress)}


def _split_antimeridian(footprint: Footprint) -> list[Footprint]:
    lon_min, lat_min, lon_max, lat_max = footprint
    if lon_min <= lon_max:
        return [footprint]
    return [(lon_min, lat_min, 180.0, lat_max), (-180.0, lat_min, lon_max, lat_max)]


# --------------------------------------------------------------------------- Copernicus tiles


def copernicus_tile_name(lat: int, lon: int) -> str:
    """GLO-30 tile whose lower-left corner is (lat, lon): ``Copernicus_DSM_COG_10_N41_00_E001_00_DEM``."""
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"{COPERNICUS_PREFIX}_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"


def _degree_range(low: float, high: float) -> range:
    """Integer degrees d whose cell [d, d+1) meets [low, high]; an edge only touching is not counted."""
    first = math.floor(low)
    last = max(first, math.ceil(high) - 1)
    return range(first, last + 1)


def copernicus_tiles(footprints: Iterable[Footprint]) -> list[str]:
    """Sorted names of the 1x1 degree GLO-30 tiles that intersect any footprint."""
    names = set()
    for footprint in footprints:
        for lon_min, lat_min, lon_max, lat_max in _split_antimeridian(footprint):
            for lat in _degree_range(lat_min, lat_max):
                for lon in _degree_range(lon_min, lon_max):
                    names.add(copernicus_tile_name(lat, ((lon + 180) % 360) - 180))
    return sorted(names)


def validate_tile(path: Path, name: str) -> None:
    """Open ``path`` with rasterio and read its first band; on failure delete it and raise DemError.

    Args:
        path: the downloaded tile in the cache.
        name: the tile's name, for the message.

    Raises:
        DemError: the file is not a readable GeoTIFF with a band and a CRS (it has been deleted,
            so the next run downloads it again).
    """
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as dataset:
            if dataset.count < 1 or dataset.crs is None:
                raise RasterioError(f"{dataset.count} band(s), crs {dataset.crs}")
            dataset.read(1)
    except (RasterioError, OSError) as error:
        path.unlink(missing_ok=True)
        raise DemError(f"DEM tile {name}: downloaded file is not a readable GeoTIFF ({error}); "
                       f"deleted {path} from the cache, rerun to download it again") from None


def fetch_copernicus(footprints: Iterable[Footprint], out: str | Path, cfg: CopernicusDem,
                     progress: bool = True, backoff_s: float = 1.0) -> tuple[list[TileRecord], int]:
    """Download (or reuse from the cache) every GLO-30 tile meeting a footprint; link it into ``out``.

    A tile the server does not have (404: open sea) is recorded as ``missing``.

    Args:
        footprints: ``(lon_min, lat_min, lon_max, lat_max)`` of each patch.
        out: the output folder the tiles are hard-linked (or copied) into.
        cfg: ``dem.copernicus`` (base URL, cache folder, retries, timeout).
        progress: show a progress bar.
        backoff_s: wait before the first retry of a download (doubling; tests make it short).

    Returns:
        The manifest rows and how many tiles came complete from the cache.

    Raises:
        DemError: a download failed for good, or a tile is not a readable GeoTIFF.
    """
    out = Path(out)
    cache = Path(cfg.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    base = cfg.url.rstrip("/")
    records, cached = [], 0
    for name in tqdm(copernicus_tiles(footprints), desc="copernicus", unit="tile", disable=not progress):
        path = cache / f"{name}.tif"
        if path.exists():
            cached += 1
        else:
            url = f"{base}/{name}/{name}.tif"
            try:
                download_resumable(url, path, retries=cfg.retries, timeout_s=cfg.timeout_s, backoff_s=backoff_s)
            except NotFound:  # no GLO-30 tile: open sea
                records.append(TileRecord(name, "missing", ""))
                continue
            except DownloadError as error:
                raise DemError(f"DEM tile {name}: {error}") from None
        validate_tile(path, name)
        link_or_copy(path, out / f"{name}.tif")
        records.append(TileRecord(name, "downloaded", f"{name}.tif"))
    return records, cached


# --------------------------------------------------------------------------- synthetic terrain


def write_synthetic_dem(footprints: Sequence[Footprint], path: str | Path, seed: int,
                        progress: bool = True) -> TileRecord:
    """Write the synthetic DEM GeoTIFF (:func:`cropseg.fetch.terrain.write_terrain`) over ``footprints`` to ``path``.

    Args:
        footprints: ``(lon_min, lat_min, lon_max, lat_max)`` of each patch.
        path: the GeoTIFF to write.
        seed: ``dem.seed``: the terrain is a function of (lon, lat, seed).
        progress: show a progress bar.

    Returns:
        The manifest row of the file.

    Raises:
        DemError: a footprint crosses the antimeridian.
    """
    if any(f[0] > f[2] for f in footprints):
        raise DemError("a patch footprint crosses the antimeridian; the synthetic DEM does not support that")
    path = Path(path)
    write_terrain(footprints, path, seed, progress)
    return TileRecord(SYNTHETIC_NAME, "synthetic", path.name)


# --------------------------------------------------------------------------- stage


def write_manifest(records: Iterable[TileRecord], path: str | Path) -> None:
    """``tiles.csv``: name, status, path; sorted by name."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for record in sorted(records, key=lambda r: r.name):
            writer.writerow([record.name, record.status, record.path])


def fetch_dem(netcdf_dir: str | Path, out: str | Path, dem: Dem, progress: bool = True,
              backoff_s: float = 1.0) -> DemSummary:
    """Fill the (existing, empty) folder ``out`` with the DEM for the patches of ``netcdf_dir``.

    The stage script passes the temporary folder of :func:`cropseg.core.atomic.atomic_dir`, so the
    output is complete or absent.

    Args:
        netcdf_dir: the fetched patches with their ``index.csv``.
        out: the output folder (created if needed).
        dem: the ``dem`` params (source, seed, copernicus).
        progress: show progress bars.
        backoff_s: wait before the first retry of a Copernicus download.

    Returns:
        The stage's summary: source, patches, manifest rows, cached tiles, seconds.

    Raises:
        DemError: no ``index.csv``, a patch that cannot be placed, a failed or corrupt
            download, or a synthetic DEM across the antimeridian.
    """
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    footprints = list(patch_footprints(netcdf_dir, progress).values())
    summary = DemSummary(dem.source, len(footprints))
    if footprints and dem.source == "synthetic":
        summary.tiles = [write_synthetic_dem(footprints, out / f"{SYNTHETIC_NAME}.tif", dem.seed, progress)]
    elif footprints and dem.source == "copernicus":
        summary.tiles, summary.cached = fetch_copernicus(footprints, out, dem.copernicus, progress, backoff_s)
    write_manifest(summary.tiles, out / MANIFEST)
    summary.tiles.sort(key=lambda r: r.name)
    summary.seconds = time.perf_counter() - started
    return summary
