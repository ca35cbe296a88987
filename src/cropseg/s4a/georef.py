"""Where an S4A patch's pixels are: its CRS and affine transform, read from the netCDF file.

The published S4A files (xarray 0.17 over rasterio) keep the raster metadata as attributes of the
data variable (``labels/labels.crs``, ``labels/labels.transform``); copies made by other tools (and
older versions of our synthetic writer) put them on the group. Both are read, variable first.
``transform`` is the rasterio / ``affine`` order ``(a, b, c, d, e, f)`` (x = a*col + b*row + c,
y = d*col + e*row + f), the order ``xarray.open_rasterio`` wrote; a GDAL-ordered geotransform
``(c, a, b, f, d, e)`` is recognised by its origin coming first
(https://rasterio.readthedocs.io/en/latest/topics/migrating-to-v1.html#affine-affine-vs-gdal-style-geotransforms).
Without a ``transform`` the grid follows from the ``x`` / ``y`` coordinate variables (pixel
centres, regular spacing).

Why a second grid reader next to :mod:`cropseg.s4a.label_grid`: the two answer different questions.
This one gives ``predict`` what it needs to write a GeoTIFF that lines up pixel for pixel: a CRS
(any that rasterio parses, EPSG code or not), the affine transform as published (the ``transform``
attribute wins over ``x``/``y``), the raster's height and width; it refuses grids a GeoTIFF of
ours cannot carry (rotated or not north-up) and, without a ``transform``, coordinates that give no
regular pixel size (irregular, or a single value).
:mod:`cropseg.s4a.label_grid` gives ``fetch_dem`` and the split's patch table only bounds and a UTM
EPSG code (to reproject the bounds to lon/lat or into a DEM tile's CRS, and to record the zone in
the table): it reads ``x``/``y`` only, needs
an EPSG code, and places a one-pixel axis with S4A's 10 m spacing. Both read ``crs`` through
:func:`cropseg.s4a.netcdf.raster_attribute`, so they find it in the same place; on a published patch
(transform and pixel centres agreeing) :attr:`PatchGrid.bounds` equals
:attr:`cropseg.s4a.label_grid.LabelGrid.bounds` (tests/test_s4a_format.py checks it on the fixture
files). They are not merged because each refuses files the other accepts and computes its bounds
by another route (transform vs. coordinates, which can differ in the last bits): one reader would
change the DEM footprints, the patch table or predict's GeoTIFFs, and the errors the stages give.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
from rasterio.crs import CRS
from rasterio.transform import Affine

from .netcdf import raster_attribute

GROUP = "labels"


class GeorefError(ValueError):
    """A patch whose grid cannot be placed on the Earth."""


@dataclass(frozen=True)
class PatchGrid:
    """A patch's raster grid: CRS, transform of pixel (0, 0)'s upper-left corner, size in pixels."""

    crs: CRS
    transform: Affine
    height: int
    width: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units, for a north-up grid."""
        left, top = self.transform @ (0, 0)
        right, bottom = self.transform @ (self.width, self.height)
        return (min(left, right), min(top, bottom), max(left, right), max(top, bottom))


def _parse_crs(value, path: Path) -> CRS:
    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        return CRS.from_user_input(text.replace("+init=", ""))
    except Exception as error:  # rasterio raises CRSError subclasses of several kinds
        raise GeorefError(f"{path}: {GROUP}: crs {text!r} is not a CRS ({error})") from None


def _parse_transform(value, path: Path) -> Affine:
    numbers = np.asarray(value, dtype=np.float64).ravel()
    if numbers.size < 6 or not np.isfinite(numbers[:6]).all():
        raise GeorefError(f"{path}: {GROUP}: transform {value!r} is not 6 finite numbers (a, b, c, d, e, f)")
    a, b, c, d, e, f = numbers[:6]
    if abs(a) > 1000 and abs(b) < 1000 and abs(d) > 1000:  # GDAL order: origin x, x size, 0, origin y, 0, y size
        a, b, c, d, e, f = b, c, a, e, f, d
    return Affine(a, b, c, d, e, f)


def _from_coordinates(group, path: Path) -> Affine:
    if "x" not in group.variables or "y" not in group.variables:
        raise GeorefError(f"{path}: {GROUP}: no 'transform' attribute and no x/y coordinate variables")
    x, y = np.asarray(group["x"][:], np.float64), np.asarray(group["y"][:], np.float64)
    if x.size < 2 or y.size < 2:
        raise GeorefError(f"{path}: {GROUP}: x/y need at least 2 values to give a pixel size")
    dx, dy = np.diff(x), np.diff(y)
    if not (np.allclose(dx, dx[0]) and np.allclose(dy, dy[0])):
        raise GeorefError(f"{path}: {GROUP}: x/y coordinates are not regularly spaced")
    return Affine(dx[0], 0.0, x[0] - dx[0] / 2, 0.0, dy[0], y[0] - dy[0] / 2)


def read_patch_grid(path: str | Path) -> PatchGrid:
    """The grid of the patch's 10 m ``labels`` raster (which the 10 m medians share).

    Args:
        path: an S4A netCDF patch.

    Returns:
        Its CRS, the transform (from the ``transform`` attribute, else from ``x``/``y``), and the
        ``labels`` variable's height and width.

    Raises:
        GeorefError: the file cannot be opened; the ``labels`` group or variable, or the ``crs``
            attribute, is missing; the CRS or transform cannot be parsed; without a transform, the
            coordinates are missing, single-valued or irregular; or the grid is not north-up.
    """
    path = Path(path)
    try:
        dataset = netCDF4.Dataset(path)
    except OSError as error:
        raise GeorefError(f"{path}: cannot open as netCDF ({error})") from None
    with dataset:
        group = dataset.groups.get(GROUP)
        if group is None or GROUP not in group.variables:
            raise GeorefError(f"{path}: group {GROUP!r} with variable {GROUP!r} expected")
        variable = group[GROUP]
        crs, where = raster_attribute(group, GROUP, "crs")
        if crs is None:
            raise GeorefError(f"{path}: {GROUP}: {where}")
        raw, _ = raster_attribute(group, GROUP, "transform")
        transform = _parse_transform(raw, path) if raw is not None else _from_coordinates(group, path)
        height, width = variable.shape
        grid = PatchGrid(_parse_crs(crs, path), transform, int(height), int(width))
    if transform.b or transform.d or transform.a <= 0 or transform.e >= 0:
        raise GeorefError(f"{path}: {GROUP}: transform {tuple(transform)[:6]} is not north-up "
                          "(expected a > 0, e < 0, no rotation)")
    return grid
