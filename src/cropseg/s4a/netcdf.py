"""The Sen4AgriNet (S4A) netCDF patch format: names, layout, validation and the patch index.

A patch file ``YYYY_TILE_patch_XX_YY.nc`` lives at ``YYYY/TILE/`` under the data root. It has
one group per Sentinel-2 band (variable ``<band>(time, y, x)``, uint16, at the band's native
resolution), groups ``labels`` and ``parcels`` (uint32 ``(y, x)`` at 10 m) and root attributes
naming the patch. Validation reads metadata only (and the small label map), so checking the
whole real dataset costs little next to reading its pixels.

Format facts this module relies on, and where they were checked:

* The published files were written by xarray 0.17 (root attribute ``_xarray_version: 0.17.0``)
  and list the root attributes ``title, authors, patch_full_name, patch_year, patch_name,
  patch_country_code, patch_tile, creation_date, references, institution, version``: the
  ``ncdump``-style listing of ``2020_31TCG_patch_14_14.nc`` in the S4A authors' README
  (https://github.com/Orion-AI-Lab/S4A, README "Dataset exploration"). The dataset card
  (https://huggingface.co/datasets/paren8esis/S4A, "Data Instances") shows ``patch_year`` as a
  string, ``'2019'``: it is read with ``int()`` whatever its type.
* Rasters read by ``xarray.open_rasterio`` carry ``transform`` (affine order a, b, c, d, e, f),
  ``crs`` (``+init=epsg:32618``), ``res``, ``is_tiled``, ``nodatavals``, ``scales``, ``offsets``
  and ``AREA_OR_POINT`` as attributes **of the DataArray** (xarray docs, ``open_rasterio``,
  https://docs.xarray.dev/en/v0.20.1/generated/xarray.open_rasterio.html); saved with
  ``to_netcdf`` they become attributes of the variable, not of its group, and the scalar ``band``
  coordinate left by selecting one band is written as ``coordinates: band``. Copies made by other
  tools may keep ``crs``/``transform`` on the group, so :func:`raster_attribute` looks at the
  variable first and at its group second.
* ``time`` is CF ``<unit> since <date>`` as xarray chose it; it is decoded with ``cftime``
  (https://unidata.github.io/cftime/api.html, ``num2date``), never by hand.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import cftime
import netCDF4
import numpy as np

from .bands import BANDS, band_side

ROOT_ATTRIBUTES = ("patch_full_name", "patch_year", "patch_name", "patch_country_code", "patch_tile")
#: Patch sides are multiples of the 60 m grid: 366 px at 10 m = 61 px at 60 m.
SIZE_QUANTUM = 61
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PATCH_NAME = re.compile(r"^(?P<year>\d{4})_(?P<tile>\d{2}[C-X][A-Z]{2})_patch_(?P<x>\d{2})_(?P<y>\d{2})\.nc$")
INDEX_COLUMNS = ("path", "year", "tile", "patch_x", "patch_y", "country", "n_dates")
#: The list of valid patches fetch_s4a writes at the root of its output (:func:`write_index`).
INDEX_FILE = "index.csv"
#: Raster metadata the published files keep on each data variable (see the module docstring).
RASTER_ATTRIBUTES = ("crs", "transform", "res", "is_tiled", "nodatavals", "scales", "offsets", "AREA_OR_POINT")


class InvalidPatch(ValueError):
    """One S4A file with everything found wrong with it.

    Raised in worker processes and sent back pickled: ``Exception`` pickles only ``self.args``
    (the message), so :meth:`__reduce__` gives the constructor's own arguments instead.
    """

    def __init__(self, path: str | Path, defects: list[str]):
        self.path = Path(path)
        self.defects = list(defects)
        super().__init__(f"{path}: " + "; ".join(self.defects))

    def __reduce__(self):
        return type(self), (str(self.path), self.defects)


def raster_attribute(group: netCDF4.Group, variable: str, name: str) -> tuple[object | None, str]:
    """Attribute ``name`` of a raster: on the variable (as published) or else on its group.

    Args:
        group: the raster's group (``labels``, ``B02``, ...).
        variable: the data variable in it, usually named as the group.
        name: the attribute (``crs``, ``transform``, ...).

    Returns:
        ``(value, where)`` with ``where`` ``"variable"`` or ``"group"``, or ``(None, what)``
        where ``what`` says, for an error message, both places that were looked at.
    """
    var = group.variables.get(variable)
    if var is not None and name in var.ncattrs():
        return var.getncattr(name), "variable"
    if name in group.ncattrs():
        return group.getncattr(name), "group"
    group_path = group.path.strip("/") or "/"
    return None, (f"attribute {name!r} missing: looked on variable {group_path}/{variable} "
                  f"and on group {group_path}")


@dataclass(frozen=True)
class PatchName:
    """What an S4A file name says: year, MGRS tile and the patch's grid position in the tile."""

    year: int
    tile: str
    x: int
    y: int

    @property
    def stem(self) -> str:
        return f"{self.year}_{self.tile}_patch_{self.x:02d}_{self.y:02d}"

    @property
    def filename(self) -> str:
        return f"{self.stem}.nc"

    @property
    def relpath(self) -> str:
        """Path under the data root, foldered as the real dataset: ``YYYY/TILE/name.nc``."""
        return f"{self.year}/{self.tile}/{self.filename}"


def parse_patch_name(filename: str) -> PatchName:
    """Parse ``YYYY_TILE_patch_XX_YY.nc`` (only the last path component is read).

    Raises:
        ValueError: the name does not match; the message says what was expected.
    """
    match = PATCH_NAME.match(Path(filename).name)
    if not match:
        raise ValueError(f"file name {Path(filename).name!r} does not match 'YYYY_TILE_patch_XX_YY.nc'")
    return PatchName(int(match["year"]), match["tile"], int(match["x"]), int(match["y"]))


@dataclass(frozen=True)
class PatchInfo:
    """One valid patch, as listed in ``index.csv``."""

    path: str
    year: int
    tile: str
    patch_x: int
    patch_y: int
    country: str
    n_dates: int
    size: int


def decode_time(values: np.ndarray, units: str, calendar: str | None = None) -> np.ndarray:
    """CF ``<unit> since <date>`` numbers to datetime64[ns]; ValueError on what cannot be read.

    Decoded by ``cftime.num2date`` (https://unidata.github.io/cftime/api.html): fractional values,
    an epoch with a time of day (and a fraction of a second) and epochs such as
    ``hours since 2019-1-1`` are read as CF says. Only real-world calendars (``standard``,
    ``gregorian``, ``proleptic_gregorian``) make sense for satellite dates: others are an error.

    Args:
        values: the ``time`` variable's numbers (a masked array is accepted; masked is missing).
        units: its ``units`` attribute.
        calendar: its ``calendar`` attribute; ``standard`` when ``None`` or empty.

    Returns:
        The dates, datetime64[ns], shaped as ``values``.

    Raises:
        ValueError: the values are not numbers, some are missing or not finite, or the units or
            calendar cannot be decoded.
    """
    values = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan) if np.ma.isMaskedArray(values) \
        else np.asarray(values)
    if values.dtype.kind not in "iuf":
        raise ValueError(f"time values of dtype {values.dtype}, expected numbers")
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        raise ValueError("time has missing or non-finite values")
    calendar = str(calendar or "standard")
    try:
        dates = cftime.num2date(values.ravel(), str(units or ""), calendar=calendar,
                                only_use_cftime_datetimes=False, only_use_python_datetimes=True)
    except (ValueError, TypeError, OverflowError) as error:
        raise ValueError(f"time units {units!r} (calendar {calendar!r}) cannot be decoded as CF "
                         f"'<unit> since <date>': {error}") from None
    # python datetimes have microsecond resolution, the finest cftime resolves
    return np.array(dates, dtype="datetime64[us]").astype("datetime64[ns]").reshape(values.shape)


def _read_signature(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(8)


def _check_grid(group: netCDF4.Group, name: str, dims: tuple[str, ...], dtype: str,
                shape: tuple[int, ...] | None, defects: list[str], where: str) -> netCDF4.Variable | None:
    variable = group.variables.get(name)
    if variable is None:
        defects.append(f"{where}: variable {name!r} missing")
        return None
    if variable.dimensions != dims:
        defects.append(f"{where}/{name}: dims {variable.dimensions}, expected {dims}")
    if variable.dtype != np.dtype(dtype):
        defects.append(f"{where}/{name}: dtype {variable.dtype}, expected {dtype}")
    if shape is not None and variable.shape[-len(shape):] != shape:
        defects.append(f"{where}/{name}: shape {variable.shape}, expected (..., {', '.join(map(str, shape))})")
    return variable


def _check_band(dataset: netCDF4.Dataset, band: str, size: int | None, year: int | None,
                defects: list[str]) -> int:
    """Check one band group; return its number of dates (0 when unusable)."""
    group = dataset.groups.get(band)
    if group is None:
        defects.append(f"band group {band!r} missing")
        return 0
    side = None if size is None else band_side(size, band)
    variable = _check_grid(group, band, ("time", "y", "x"), "uint16",
                           None if side is None else (side, side), defects, band)
    if variable is None:
        return 0
    time = group.variables.get("time")
    if time is None:
        defects.append(f"{band}: time coordinate missing")
        return 0
    if variable.shape[0] == 0:
        defects.append(f"{band}: no acquisitions (time is empty)")
        return 0
    try:
        dates = decode_time(time[:], getattr(time, "units", ""), getattr(time, "calendar", None))
    except ValueError as error:
        defects.append(f"{band}/time: {error}")
        return 0
    if year is not None:
        years = dates.astype("datetime64[Y]").astype(int) + 1970
        outside = dates[years != year]
        if outside.size:
            defects.append(f"{band}/time: {outside.size} date(s) outside patch_year {year}, "
                           f"e.g. {str(outside[0])[:10]}")
    if np.any(np.diff(dates.astype("int64")) <= 0):
        defects.append(f"{band}/time: dates not strictly increasing")
    _check_georeference(group, band, defects)
    return int(variable.shape[0])


def _check_georeference(group: netCDF4.Group, name: str, defects: list[str]) -> None:
    """``crs`` must be there (variable or group); a ``transform``, where given, is 6 numbers."""
    crs, where = raster_attribute(group, name, "crs")
    if crs is None:
        defects.append(f"{name}: {where}")
    transform, _ = raster_attribute(group, name, "transform")
    if transform is not None:
        try:
            numbers = np.asarray(transform, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            numbers = np.empty(0)
        if numbers.size < 6 or not np.all(np.isfinite(numbers[:6])):
            defects.append(f"{name}: transform {transform!r} is not 6 numbers (a, b, c, d, e, f)")


def validate_patch(path: str | Path, root: str | Path | None = None, *, labels_required: bool = True) -> PatchInfo:
    """Check one S4A file thoroughly; raise :class:`InvalidPatch` listing every defect found.

    Args:
        path: the netCDF file.
        root: the data root the index path is made relative to (default: the file's folder).
        labels_required: ``False`` accepts a file without the ``labels`` and ``parcels`` groups
            (a season not declared yet, to be mapped): its size comes from the 10 m band ``B02``.
            Groups that are there are checked all the same.

    Returns:
        The patch's index row; its ``n_dates`` is the most dates any band has.

    Raises:
        InvalidPatch: anything is wrong (name, signature, groups, variables, shapes, dtypes,
            dates, georeference, root attributes), or the file cannot be read; every defect found
            is listed.
    """
    path = Path(path)
    defects: list[str] = []
    try:
        name = parse_patch_name(path.name)
    except ValueError as error:
        defects.append(str(error))
        name = None
    try:
        signature = _read_signature(path)
    except OSError as error:
        raise InvalidPatch(path, defects + [f"cannot be read: {error.strerror}"]) from None
    if signature != HDF5_SIGNATURE:
        raise InvalidPatch(path, defects + ["not a netCDF-4/HDF5 file (HDF5 signature missing)"])
    try:
        dataset = netCDF4.Dataset(path, "r")
    except OSError as error:
        raise InvalidPatch(path, defects + [f"corrupt or truncated netCDF-4/HDF5 file ({error})"]) from None
    try:
        with dataset:
            return _check_contents(dataset, path, root, name, defects, labels_required)
    except InvalidPatch:
        raise
    except Exception as error:  # HDF5 errors on a damaged chunk or header surface as many types
        raise InvalidPatch(path, defects + [f"corrupt or truncated netCDF-4/HDF5 file "
                                            f"({type(error).__name__}: {error})"]) from None


def _check_contents(dataset: netCDF4.Dataset, path: Path, root: str | Path | None, name: PatchName | None,
                    defects: list[str], labels_required: bool = True) -> PatchInfo:
    """Everything :func:`validate_patch` checks inside an opened file."""
    missing = [a for a in ROOT_ATTRIBUTES if a not in dataset.ncattrs()]
    if missing:
        defects.append(f"root attribute(s) missing: {', '.join(missing)}")
    attr = {a: dataset.getncattr(a) for a in ROOT_ATTRIBUTES if a in dataset.ncattrs()}
    year = None
    if "patch_year" in attr:
        try:
            year = int(attr["patch_year"])
        except (TypeError, ValueError):
            defects.append(f"patch_year {attr['patch_year']!r} is not a year")
    if name is not None:
        if year is not None and year != name.year:
            defects.append(f"patch_year {year} differs from the year {name.year} in the file name")
        if "patch_tile" in attr and str(attr["patch_tile"]) != name.tile:
            defects.append(f"patch_tile {attr['patch_tile']!r} differs from the tile {name.tile} in the file name")
        year = name.year if year is None else year

    size = None
    for group_name in ("labels", "parcels"):
        group = dataset.groups.get(group_name)
        if group is None:
            if labels_required:
                defects.append(f"group {group_name!r} missing")
            continue
        variable = _check_grid(group, group_name, ("y", "x"), "uint32", None, defects, group_name)
        if variable is None:
            continue
        _check_georeference(group, group_name, defects)
        height, width = variable.shape
        if height != width or height % SIZE_QUANTUM or height == 0:
            defects.append(f"{group_name}: shape {variable.shape}, expected square with a side multiple of 61")
        elif size is None:
            size = height
        elif height != size:
            defects.append(f"{group_name}: shape {variable.shape} differs from labels ({size}, {size})")
    if size is None and not labels_required and not any(g in dataset.groups for g in ("labels", "parcels")):
        size = _size_from_band(dataset, defects)
    n_dates = [_check_band(dataset, band, size, year, defects) for band in BANDS]
    if defects:
        raise InvalidPatch(path, _merge_band_defects(defects))
    assert name is not None and size is not None
    relative = path.relative_to(root).as_posix() if root is not None else path.name
    return PatchInfo(relative, name.year, name.tile, name.x, name.y,
                     str(attr["patch_country_code"]), max(n_dates), size)


def _size_from_band(dataset: netCDF4.Dataset, defects: list[str]) -> int | None:
    """The 10 m side of a file without ``labels``: ``B02``'s ``(time, y, x)`` shape (its own checks
    follow in :func:`_check_band`)."""
    group = dataset.groups.get("B02")
    variable = None if group is None else group.variables.get("B02")
    if variable is None or len(variable.shape) != 3:
        return None  # reported by the band checks
    height, width = variable.shape[1:]
    if height != width or height % SIZE_QUANTUM or height == 0:
        defects.append(f"B02: shape {variable.shape}, expected (time, side, side) with a side multiple of 61 "
                       "(no labels group to take the patch size from)")
        return None
    return int(height)


def _merge_band_defects(defects: list[str]) -> list[str]:
    """One line for a defect every listed band shares (``time: ... (bands B01, B02, ...)``)."""
    suffixes: dict[str, list[str]] = {}
    for defect in defects:
        band, sep, rest = defect.partition("/")
        if sep and band in BANDS and not rest.startswith(band):
            suffixes.setdefault(rest, []).append(band)
    merged, done = [], set()
    for defect in defects:
        band, sep, rest = defect.partition("/")
        bands = suffixes.get(rest, []) if sep and band in BANDS else []
        if len(bands) < 2:
            merged.append(defect)
        elif rest not in done:
            done.add(rest)
            merged.append(f"{rest} (bands {', '.join(bands)})")
    return merged


def find_patches(root: str | Path) -> list[Path]:
    """Every ``*.nc`` file under ``root``, sorted so that listings never depend on the file system."""
    return sorted(Path(root).rglob("*.nc"), key=lambda p: p.relative_to(root).as_posix())


def write_index(infos: list[PatchInfo], path: str | Path) -> None:
    """``index.csv``: one row per valid patch, sorted by path."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for info in sorted(infos, key=lambda i: i.path):
            writer.writerow([getattr(info, c) for c in INDEX_COLUMNS])


def read_index(path: str | Path) -> list[PatchInfo]:
    """Read ``index.csv`` back; the patch size is not stored there and reads as 0."""
    with open(path, newline="") as handle:
        return [PatchInfo(r["path"], int(r["year"]), r["tile"], int(r["patch_x"]), int(r["patch_y"]),
                          r["country"], int(r["n_dates"]), 0) for r in csv.DictReader(handle)]
