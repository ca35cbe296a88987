"""The ``fetch_dem`` stage: elevation covering the footprints of the S4A patches in ``data/netcdf``.

Sources (params section ``dem``):

``synthetic`` (default, offline)
    one GeoTIFF ``synthetic.tif`` (EPSG:4326, float32, nodata -9999, 1 arc-second pixels, LZW,
    256x256 tiles) over the union bounding box of all footprints plus :data:`MARGIN_DEG`. The
    terrain is a deterministic function of (lon, lat, ``dem.seed``) alone: a sum of smooth,
    compactly supported bumps (broad massifs, elongated ridges, small hills) whose centres, heights,
    widths and orientations are drawn per cell of three global lattices, evaluated exactly on a
    global 6 arc-second node grid and bilinearly interpolated to the global 1 arc-second pixel grid.
    Pixels are addressed by global integer indices, so an area covered by two different patch sets
    gets bit-identical values; heights are clipped to 0..2000 m. Only the 256x256 blocks that meet
    a footprint (plus margin) are computed; other blocks are left sparse and read as nodata, so the
    cost grows with the area of the patches, not with the area of their bounding box.

``copernicus``
    the 1x1 degree Copernicus GLO-30 tiles (public, no account) that intersect the footprints,
    downloaded over HTTPS into ``dem.copernicus.cache_dir`` by :mod:`cropseg.download` (retries
    with exponential backoff, interrupted downloads resumed with HTTP Range from ``NAME.tif.part``),
    validated with rasterio and hard-linked (copied across file systems) into the output. A tile the server answers with
    404 does not exist (open sea) and is recorded as ``missing``.

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
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .download import DownloadError, NotFound, download_resumable
from .files import link_or_copy
from .label_grid import LabelGridError, read_label_grid
from .params import CopernicusDem, Dem
from .s4a import INDEX_FILE, read_index

Footprint = tuple[float, float, float, float]  # lon_min, lat_min, lon_max, lat_max

MANIFEST = "tiles.csv"
MANIFEST_COLUMNS = ("name", "status", "path")
SYNTHETIC_NAME = "synthetic"
NODATA = -9999.0
#: Synthetic pixels per degree (1 arc-second, ~30 m as GLO-30) and per lattice node (6 arc-seconds).
PIXELS_PER_DEG = 3600
NODE_STEP = 6
#: Margin around the union of the footprints, in degrees (~1 km).
MARGIN_DEG = 0.01
BLOCK = 256
MAX_ELEVATION = 2000.0
#: Terrain lattices: (cell size deg, height range m, minor half-width range deg, elongation range).
#: A bump is amp * (1 - r^2)^3 for r < 1 (r: distance in half-widths), smooth and exactly zero outside.
_LEVELS = (
    (0.5, (-400.0, 1000.0), (0.25, 0.6), (1.0, 2.0)),   # massifs and basins
    (0.1, (-80.0, 400.0), (0.03, 0.08), (1.5, 4.0)),    # ridges
    (0.02, (-15.0, 60.0), (0.008, 0.02), (1.0, 2.0)),   # hills
)
_BASE_ELEVATION = 200.0
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
    outer centres. Read by :func:`cropseg.label_grid.read_label_grid`, as the split's patch table.
    """
    try:
        return read_label_grid(path).lonlat()
    except LabelGridError as error:
        raise DemError(str(error)) from None


def patch_footprints(netcdf_dir: str | Path, progress: bool = True) -> dict[str, Footprint]:
    """Footprint of every patch listed in ``netcdf_dir/index.csv``, keyed by its index path."""
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
    """Open ``path`` with rasterio and read its first band; on failure delete it and raise DemError."""
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

    Returns the manifest rows and how many tiles came complete from the cache.
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


@lru_cache(maxsize=65536)
def _bump(seed: int, level: int, i: int, j: int) -> tuple[float, ...]:
    """The bump of lattice cell (i: lon, j: lat) at ``level``: cx, cy, amp, cos_lat, c, s, 1/a, 1/b, extent.

    Drawn from a generator seeded by (seed, level, cell) only, so it is the same whatever area is made.
    """
    cell, heights, widths, elongation = _LEVELS[level]
    rng = np.random.default_rng([seed, 11, level, i + (1 << 30), j + (1 << 30)])
    u = rng.random(6)
    cx = (i + u[0]) * cell
    cy = (j + u[1]) * cell
    amp = heights[0] + (heights[1] - heights[0]) * u[2]
    minor = widths[0] + (widths[1] - widths[0]) * u[3]
    major = minor * (elongation[0] + (elongation[1] - elongation[0]) * u[4])
    angle = math.pi * u[5]
    cos_lat = max(math.cos(math.radians(cy)), 0.05)
    # extent of the support in degrees: latitude `major`, longitude `major / cos_lat`
    return (float(cx), float(cy), float(amp), cos_lat, math.cos(angle), math.sin(angle),
            1.0 / major, 1.0 / minor, major)


def _max_extent(level: int) -> float:
    _, _, widths, elongation = _LEVELS[level]
    return widths[1] * elongation[1]


def terrain_nodes(seed: int, kx0: int, kx1: int, ky0: int, ky1: int) -> np.ndarray:
    """Exact terrain (m, float64, unclipped) at global nodes kx0..kx1 x ky0..ky1 (inclusive).

    Node (kx, ky) is at lon = kx * 6", lat = ky * 6"; rows of the result go from ky0 (south) up.
    Every node's value is the same ordered sum of non-zero bump terms whatever range is asked for
    (the terms outside the range add exact zeros), so results agree bit for bit across calls.
    Elementwise arithmetic only (no transcendental functions on arrays) keeps it identical across
    vector and scalar code paths.
    """
    per_deg = PIXELS_PER_DEG // NODE_STEP
    lon = np.arange(kx0, kx1 + 1, dtype=np.float64) / per_deg
    lat = np.arange(ky0, ky1 + 1, dtype=np.float64) / per_deg
    height = np.full((lat.size, lon.size), _BASE_ELEVATION)
    lon_lo, lon_hi, lat_lo, lat_hi = lon[0], lon[-1], lat[0], lat[-1]
    for level, (cell, *_rest) in enumerate(_LEVELS):
        reach_lat = _max_extent(level)
        reach_lon = reach_lat / max(math.cos(math.radians(max(abs(lat_lo), abs(lat_hi)) + reach_lat)), 0.05)
        for i in range(math.floor((lon_lo - reach_lon) / cell) - 1, math.floor((lon_hi + reach_lon) / cell) + 2):
            for j in range(math.floor((lat_lo - reach_lat) / cell) - 1, math.floor((lat_hi + reach_lat) / cell) + 2):
                cx, cy, amp, cos_lat, c, s, inv_a, inv_b, extent = _bump(seed, level, i, j)
                # nodes inside the bump's bounding box
                a0 = np.searchsorted(lon, cx - extent / cos_lat, "left")
                a1 = np.searchsorted(lon, cx + extent / cos_lat, "right")
                b0 = np.searchsorted(lat, cy - extent, "left")
                b1 = np.searchsorted(lat, cy + extent, "right")
                if a0 >= a1 or b0 >= b1:
                    continue
                dx = (lon[a0:a1] - cx) * cos_lat
                dy = lat[b0:b1] - cy
                u = (dx[None, :] * c + dy[:, None] * s) * inv_a
                v = (dy[:, None] * c - dx[None, :] * s) * inv_b
                t = 1.0 - (u * u + v * v)
                np.maximum(t, 0.0, out=t)
                height[b0:b1, a0:a1] += amp * (t * t * t)
    return height


def synthetic_elevation(seed: int, col0: int, row_top: int, width: int, height: int) -> np.ndarray:
    """Elevation (float32, m, 0..2000) of global 1" pixels, ``height`` rows from ``row_top`` down.

    Global pixel column ``I`` has its centre at lon (I + 0.5)"; global row ``J`` (counted up from
    the equator) at lat (J + 0.5)"; ``row_top`` is the northernmost row. Values are bilinear in the
    6" nodes of :func:`terrain_nodes`, from integer arithmetic only, so they are a function of
    (seed, I, J) alone.
    """
    cols = np.arange(col0, col0 + width)
    rows = np.arange(row_top, row_top - height, -1)
    kx0, ky0 = math.floor(cols[0] / NODE_STEP), math.floor(rows[-1] / NODE_STEP)
    kx1, ky1 = math.floor(cols[-1] / NODE_STEP) + 1, math.floor(rows[0] / NODE_STEP) + 1
    nodes = terrain_nodes(seed, kx0, kx1, ky0, ky1)
    ix = cols // NODE_STEP - kx0
    iy = rows // NODE_STEP - ky0
    wx = (2 * (cols % NODE_STEP) + 1) / (2.0 * NODE_STEP)
    wy = (2 * (rows % NODE_STEP) + 1) / (2.0 * NODE_STEP)
    south = nodes[iy][:, ix] * (1 - wx) + nodes[iy][:, ix + 1] * wx
    north = nodes[iy + 1][:, ix] * (1 - wx) + nodes[iy + 1][:, ix + 1] * wx
    value = south * (1 - wy)[:, None] + north * wy[:, None]
    return np.clip(value, 0.0, MAX_ELEVATION).astype(np.float32)


def _pixel_bounds(footprints: Sequence[Footprint]) -> tuple[int, int, int, int]:
    """Global pixel index range (col0, col1, row0, row1; exclusive ends) of the union plus margin."""
    lon_min = min(f[0] for f in footprints) - MARGIN_DEG
    lat_min = min(f[1] for f in footprints) - MARGIN_DEG
    lon_max = max(f[2] for f in footprints) + MARGIN_DEG
    lat_max = max(f[3] for f in footprints) + MARGIN_DEG
    return (math.floor(lon_min * PIXELS_PER_DEG), math.ceil(lon_max * PIXELS_PER_DEG),
            math.floor(lat_min * PIXELS_PER_DEG), math.ceil(lat_max * PIXELS_PER_DEG))


def write_synthetic_dem(footprints: Sequence[Footprint], path: str | Path, seed: int,
                        progress: bool = True) -> TileRecord:
    """Write the synthetic DEM GeoTIFF over the union of ``footprints`` (plus margin) to ``path``."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    if any(f[0] > f[2] for f in footprints):
        raise DemError("a patch footprint crosses the antimeridian; the synthetic DEM does not support that")
    path = Path(path)
    col0, col1, row0, row1 = _pixel_bounds(footprints)
    width, height = col1 - col0, row1 - row0
    # blocks that meet a footprint (plus margin) get terrain; the others stay sparse (nodata)
    n_bx, n_by = -(-width // BLOCK), -(-height // BLOCK)
    wanted = np.zeros((n_by, n_bx), dtype=bool)
    for lon_min, lat_min, lon_max, lat_max in footprints:
        c0 = math.floor((lon_min - MARGIN_DEG) * PIXELS_PER_DEG) - col0
        c1 = math.ceil((lon_max + MARGIN_DEG) * PIXELS_PER_DEG) - col0
        r0 = row1 - math.ceil((lat_max + MARGIN_DEG) * PIXELS_PER_DEG)  # raster rows count down from north
        r1 = row1 - math.floor((lat_min - MARGIN_DEG) * PIXELS_PER_DEG)
        wanted[max(r0, 0) // BLOCK:(min(r1, height) - 1) // BLOCK + 1,
               max(c0, 0) // BLOCK:(min(c1, width) - 1) // BLOCK + 1] = True
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "float32",
        "crs": "EPSG:4326", "nodata": NODATA,
        "transform": from_origin(col0 / PIXELS_PER_DEG, row1 / PIXELS_PER_DEG, 1 / PIXELS_PER_DEG, 1 / PIXELS_PER_DEG),
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "lzw", "predictor": 3,
        "sparse_ok": True, "bigtiff": "if_safer",
    }
    blocks = [(by, bx) for by, bx in zip(*np.nonzero(wanted))]
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.update_tags(source=f"cropseg synthetic DEM, seed {seed}", units="m")
        for by, bx in tqdm(blocks, desc="synthetic dem", unit="block", disable=not progress):
            c, r = int(bx) * BLOCK, int(by) * BLOCK
            w, h = min(BLOCK, width - c), min(BLOCK, height - r)
            values = synthetic_elevation(seed, col0 + c, row1 - 1 - r, w, h)
            dataset.write(values, 1, window=Window(c, r, w, h))
    return TileRecord(SYNTHETIC_NAME, "synthetic", path.name)


# --------------------------------------------------------------------------- stage


def write_manifest(records: Iterable[TileRecord], path: str | Path) -> None:
    """``tiles.csv``: name, status, path; sorted by name."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for record in sorted(records, key=lambda r: r.name):
            writer.writerow([record.name, record.status, record.path])


def read_manifest(path: str | Path) -> list[TileRecord]:
    with open(path, newline="") as handle:
        return [TileRecord(r["name"], r["status"], r["path"]) for r in csv.DictReader(handle)]


def fetch_dem(netcdf_dir: str | Path, out: str | Path, dem: Dem, progress: bool = True,
              backoff_s: float = 1.0) -> DemSummary:
    """Fill the (existing, empty) folder ``out`` with the DEM for the patches of ``netcdf_dir``.

    The stage script passes the temporary folder of :func:`cropseg.atomic.atomic_dir`, so the
    output is complete or absent.
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
