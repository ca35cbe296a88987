"""Where an S4A patch lies, from its ``labels`` grid: the EPSG code and UTM bounds (one reader).

``fetch_dem`` (the footprints its elevation must cover) and ``split`` (the per-patch table) both
place a patch by the ``x``/``y`` pixel centres of its ``labels`` group, in the UTM CRS of the
``crs`` attribute (on the ``labels`` variable as published, else on its group: see
:func:`cropseg.s4a.netcdf.raster_attribute`); the bounds extend half a pixel beyond the outer centres.
Both read it here, so both refuse the same files with the same messages (a CRS without an EPSG
code included). Each stage wraps :class:`LabelGridError` in its own error class.

``predict`` places its output with another reader, :func:`cropseg.s4a.georef.read_patch_grid`, on
purpose: it needs the affine transform as published (the ``transform`` attribute first), the
raster size and a north-up grid to write GeoTIFFs, while the readers here need only bounds and an
EPSG code, taken from the pixel centres. Both look ``crs`` up through
:func:`cropseg.s4a.netcdf.raster_attribute`, and on a published patch both give the same bounds; why
they are not one reader (what each accepts, and how each computes the bounds) is written in
:mod:`cropseg.s4a.georef`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np

from .geo import footprint_lonlat, parse_epsg
from .netcdf import raster_attribute

#: Half a pixel (m) assumed when a coordinate has a single value: S4A's 10 m grid.
_HALF_PIXEL_M = 5.0


class LabelGridError(ValueError):
    """A patch whose ``labels`` grid cannot be placed on the Earth (message starts with its path)."""


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
    """Read the grid of ``path``'s ``labels`` group.

    Args:
        path: an S4A netCDF patch.
        labels: also read the ``labels`` variable (the label map) into :attr:`LabelGrid.labels`.

    Raises:
        LabelGridError: the file cannot be opened, the group, the variable (with ``labels``),
            a coordinate or the ``crs`` attribute is missing, the coordinates are empty, or the
            CRS is not one or has no EPSG code.
    """
    path = Path(path)
    try:
        dataset = netCDF4.Dataset(path, "r")
    except OSError as error:
        raise LabelGridError(f"{path}: cannot open as netCDF ({error})") from None
    with dataset:
        group = dataset.groups.get("labels")
        if group is None:
            raise LabelGridError(f"{path}: group 'labels' missing")
        wanted = ("labels", "x", "y") if labels else ("x", "y")
        missing = [v for v in wanted if v not in group.variables]
        if missing:
            names = ", ".join(f"{'variable' if v == 'labels' else 'coordinate'} {v!r}" for v in missing)
            raise LabelGridError(f"{path}: labels: {names} missing")
        crs, where = raster_attribute(group, "labels", "crs")
        if crs is None:
            raise LabelGridError(f"{path}: labels: {where}")
        group.set_auto_mask(False)
        label_map = np.asarray(group.variables["labels"][:]) if labels else None
        x = np.asarray(group.variables["x"][:], dtype=np.float64)
        y = np.asarray(group.variables["y"][:], dtype=np.float64)
        crs = str(crs)
    if x.size == 0 or y.size == 0:
        raise LabelGridError(f"{path}: labels: empty x/y coordinates")
    try:
        epsg = parse_epsg(crs)
    except Exception as error:  # pyproj raises its own CRSError
        raise LabelGridError(f"{path}: labels: crs {crs!r} is not a CRS ({error})") from None
    if epsg is None:
        raise LabelGridError(f"{path}: labels: crs {crs!r} has no EPSG code")
    half_x = abs(float(x[1] - x[0])) / 2 if x.size > 1 else _HALF_PIXEL_M
    half_y = abs(float(y[1] - y[0])) / 2 if y.size > 1 else _HALF_PIXEL_M
    bounds = (float(x.min()) - half_x, float(y.min()) - half_y, float(x.max()) + half_x, float(y.max()) + half_y)
    return LabelGrid(epsg, bounds, label_map)
