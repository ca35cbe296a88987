"""Synthetic terrain for the ``fetch_dem`` stage's ``synthetic`` source: elevation from (lon, lat, seed) alone.

The terrain is a sum of smooth, compactly supported bumps (broad massifs, elongated ridges, small
hills) whose centres, heights, widths and orientations are drawn per cell of three global lattices,
evaluated exactly on a global 6 arc-second node grid and bilinearly interpolated to the global
1 arc-second pixel grid. Pixels are addressed by global integer indices, so an area covered by two
different patch sets gets bit-identical values. Kept apart from :mod:`cropseg.fetch.dem` (footprints,
Copernicus tiles, manifest) because it is a generator with no input but coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from tqdm import tqdm

Footprint = tuple[float, float, float, float]  # lon_min, lat_min, lon_max, lat_max

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

    Args:
        seed: ``dem.seed``.
        kx0: westernmost node column (lon = kx0 * 6").
        kx1: easternmost node column, included.
        ky0: southernmost node row (lat = ky0 * 6").
        ky1: northernmost node row, included.

    Returns:
        ``(ky1 - ky0 + 1, kx1 - kx0 + 1)`` heights in metres, south row first.
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

    Args:
        seed: ``dem.seed``.
        col0: the westernmost global pixel column.
        row_top: the northernmost global pixel row.
        width: columns.
        height: rows, going south.

    Returns:
        ``(height, width)`` elevations, north row first (as a GeoTIFF stores them).
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


def write_terrain(footprints: Sequence[Footprint], path: Path, seed: int, progress: bool = True) -> None:
    """Write the terrain GeoTIFF over the union of ``footprints`` (plus margin) to ``path``.

    Footprints must not cross the antimeridian (``lon_min <= lon_max``): the caller checks.

    Args:
        footprints: ``(lon_min, lat_min, lon_max, lat_max)`` of each patch; only the 256 x 256
            blocks meeting one (plus margin) are computed, the others stay sparse (nodata).
        path: the GeoTIFF to write.
        seed: ``dem.seed``.
        progress: show a progress bar.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

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
