"""Where an S4A patch lies on the Earth: two readers of its 10 m ``labels`` grid, for two uses.

Both find ``crs`` through :func:`cropseg.s4a.netcdf.raster_attribute` (the published files, xarray
0.17 over rasterio, keep the raster metadata on the data variable, ``labels/labels.crs``; copies
made by other tools put it on the group: variable first), and both raise :class:`GridError` with a
message that starts with the file's path. They differ in what they need and so in what they accept:

* :func:`read_label_grid` (``fetch_dem``'s footprints, the split's per-patch table) gives a UTM
  EPSG code and bounds: enough to reproject the footprint to lon/lat or into a DEM tile's CRS, and
  to record the zone. It reads the ``x``/``y`` pixel centres only, extends them by half a pixel,
  places a one-pixel axis with S4A's 10 m spacing, and refuses a CRS without an EPSG code. One
  reader for both stages, so both refuse the same files with the same messages.
* :func:`read_patch_grid` (``predict``) gives what a GeoTIFF needs to line up pixel for pixel: a
  CRS (any that rasterio parses, EPSG code or not), the affine transform as published (the
  ``transform`` attribute wins over ``x``/``y``), the height and width. ``transform`` is in the
  rasterio / ``affine`` order ``(a, b, c, d, e, f)`` (x = a*col + b*row + c, y = d*col + e*row + f),
  as ``xarray.open_rasterio`` wrote it; a GDAL-ordered geotransform ``(c, a, b, f, d, e)`` is
  recognised by its origin coming first
  (https://rasterio.readthedocs.io/en/latest/topics/migrating-to-v1.html#affine-affine-vs-gdal-style-geotransforms).
  Without a ``transform`` the grid follows from regularly spaced ``x``/``y`` centres. It refuses
  grids a GeoTIFF of ours cannot carry (rotated or not north-up) and coordinates that give no
  regular pixel size (irregular, or a single value).

On a published patch (transform and pixel centres agreeing) :attr:`PatchGrid.bounds` equals
:attr:`LabelGrid.bounds` (``tests/test_s4a_format.py`` checks it on the fixture files). They stay
two readers because each refuses files the other accepts and computes its bounds by another route
(transform vs. pixel centres, which can differ in the last bits): one reader would change the DEM
footprints, the patch table or predict's GeoTIFFs, and the errors the stages give.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import netCDF4
import numpy as np

from .geo import footprint_lonlat, parse_epsg
from .netcdf import raster_attribute

if TYPE_CHECKING:  # rasterio is imported where read_patch_grid needs it: the footprint reader goes without
    from rasterio.crs import CRS
    from rasterio.transform import Affine

GROUP = "labels"
#: Half a pixel (m) assumed when a coordinate has a single value: S4A's 10 m grid.
_HALF_PIXEL_M = 5.0


class GridError(ValueError):
    """A patch whose ``labels`` grid cannot be placed on the Earth (message starts with its path).

    ``fetch_dem`` and ``split`` wrap it in their own error class; ``predict`` lets it through.
    """


# --------------------------------------------------------------------------- footprints: EPSG and bounds


@dataclass(frozen=True)
class LabelGrid:
    """A patch's ``labels`` grid: UTM EPSG code, bounds, and the label map when asked for."""

    epsg: int
    bounds: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max: pixel edges, in the UTM CRS
    labels: np.ndarray | None = None

    def lonlat(self) -> tuple[float, float, float, float]:
        """(lon_min, lat_min, lon_max, lat_max): the EPSG:4326 bounding box of the bounds."""
        return tuple(float(v) for v in footprint_lonlat(self.epsg, *self.bounds))  # type: ignore[return-value]


def read_label_grid(path: str | Path, *, labels: bool = False) -> LabelGrid:
    """Read the grid of ``path``'s ``labels`` group from its pixel centres.

    Args:
        path: an S4A netCDF patch.
        labels: also read the ``labels`` variable (the label map) into :attr:`LabelGrid.labels`.

    Returns:
        The UTM EPSG code and the bounds (outer pixel centres plus half a pixel).

    Raises:
        GridError: the file cannot be opened, the group, the variable (with ``labels``),
            a coordinate or the ``crs`` attribute is missing, the coordinates are empty, or the
            CRS is not one or has no EPSG code.
    """
    path = Path(path)
    try:
        dataset = netCDF4.Dataset(path, "r")
    except OSError as error:
        raise GridError(f"{path}: cannot open as netCDF ({error})") from None
    with dataset:
        group = dataset.groups.get("labels")
        if group is None:
            raise GridError(f"{path}: group 'labels' missing")
        wanted = ("labels", "x", "y") if labels else ("x", "y")
        missing = [v for v in wanted if v not in group.variables]
        if missing:
            names = ", ".join(f"{'variable' if v == 'labels' else 'coordinate'} {v!r}" for v in missing)
            raise GridError(f"{path}: labels: {names} missing")
        crs, where = raster_attribute(group, "labels", "crs")
        if crs is None:
            raise GridError(f"{path}: labels: {where}")
        group.set_auto_mask(False)
        label_map = np.asarray(group.variables["labels"][:]) if labels else None
        x = np.asarray(group.variables["x"][:], dtype=np.float64)
        y = np.asarray(group.variables["y"][:], dtype=np.float64)
        crs = str(crs)
    if x.size == 0 or y.size == 0:
        raise GridError(f"{path}: labels: empty x/y coordinates")
    try:
        epsg = parse_epsg(crs)
    except Exception as error:  # pyproj raises its own CRSError
        raise GridError(f"{path}: labels: crs {crs!r} is not a CRS ({error})") from None
    if epsg is None:
        raise GridError(f"{path}: labels: crs {crs!r} has no EPSG code")
    half_x = abs(float(x[1] - x[0])) / 2 if x.size > 1 else _HALF_PIXEL_M
    half_y = abs(float(y[1] - y[0])) / 2 if y.size > 1 else _HALF_PIXEL_M
    bounds = (float(x.min()) - half_x, float(y.min()) - half_y, float(x.max()) + half_x, float(y.max()) + half_y)
    return LabelGrid(epsg, bounds, label_map)


# --------------------------------------------------------------------------- GeoTIFFs: CRS, transform, size


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
    from rasterio.crs import CRS

    text = value.decode() if isinstance(value, bytes) else str(value)
    try:
        return CRS.from_user_input(text.replace("+init=", ""))
    except Exception as error:  # rasterio raises CRSError subclasses of several kinds
        raise GridError(f"{path}: {GROUP}: crs {text!r} is not a CRS ({error})") from None


def _parse_transform(value, path: Path) -> Affine:
    from rasterio.transform import Affine

    numbers = np.asarray(value, dtype=np.float64).ravel()
    if numbers.size < 6 or not np.isfinite(numbers[:6]).all():
        raise GridError(f"{path}: {GROUP}: transform {value!r} is not 6 finite numbers (a, b, c, d, e, f)")
    a, b, c, d, e, f = numbers[:6]
    if abs(a) > 1000 and abs(b) < 1000 and abs(d) > 1000:  # GDAL order: origin x, x size, 0, origin y, 0, y size
        a, b, c, d, e, f = b, c, a, e, f, d
    return Affine(a, b, c, d, e, f)


def _from_coordinates(group, path: Path) -> Affine:
    from rasterio.transform import Affine

    if "x" not in group.variables or "y" not in group.variables:
        raise GridError(f"{path}: {GROUP}: no 'transform' attribute and no x/y coordinate variables")
    x, y = np.asarray(group["x"][:], np.float64), np.asarray(group["y"][:], np.float64)
    if x.size < 2 or y.size < 2:
        raise GridError(f"{path}: {GROUP}: x/y need at least 2 values to give a pixel size")
    dx, dy = np.diff(x), np.diff(y)
    if not (np.allclose(dx, dx[0]) and np.allclose(dy, dy[0])):
        raise GridError(f"{path}: {GROUP}: x/y coordinates are not regularly spaced")
    return Affine(dx[0], 0.0, x[0] - dx[0] / 2, 0.0, dy[0], y[0] - dy[0] / 2)


TEN_METRE_BANDS = ("B02", "B03", "B04", "B08")


def read_patch_grid(path: str | Path) -> PatchGrid:
    """The grid of the patch's 10 m ``labels`` raster (which the 10 m medians share); a file
    without ``labels`` (a season not yet declared) is placed by its first 10 m band group.

    Args:
        path: an S4A netCDF patch.

    Returns:
        Its CRS, the transform (from the ``transform`` attribute, else from ``x``/``y``), and the
        ``labels`` variable's height and width.

    Raises:
        GridError: the file cannot be opened; the ``labels`` group or variable, or the ``crs``
            attribute, is missing; the CRS or transform cannot be parsed; without a transform, the
            coordinates are missing, single-valued or irregular; or the grid is not north-up.
    """
    path = Path(path)
    try:
        dataset = netCDF4.Dataset(path)
    except OSError as error:
        raise GridError(f"{path}: cannot open as netCDF ({error})") from None
    with dataset:
        name = next((n for n in (GROUP, *TEN_METRE_BANDS) if n in dataset.groups and n in dataset[n].variables),
                    None)
        if name is None:
            raise GridError(f"{path}: group {GROUP!r} with variable {GROUP!r} expected (or, without labels, "
                            f"a 10 m band group {'/'.join(TEN_METRE_BANDS)})")
        group = dataset.groups[name]
        variable = group[name]
        crs, where = raster_attribute(group, name, "crs")
        if crs is None:
            raise GridError(f"{path}: {name}: {where}")
        raw, _ = raster_attribute(group, name, "transform")
        transform = _parse_transform(raw, path) if raw is not None else _from_coordinates(group, path)
        height, width = variable.shape[-2:]
        grid = PatchGrid(_parse_crs(crs, path), transform, int(height), int(width))
    if transform.b or transform.d or transform.a <= 0 or transform.e >= 0:
        raise GridError(f"{path}: {GROUP}: transform {tuple(transform)[:6]} is not north-up "
                        "(expected a > 0, e < 0, no rotation)")
    return grid
