"""The Sen4AgriNet (S4A) netCDF patch format: names, layout, validation and the patch index.

A patch file ``YYYY_TILE_patch_XX_YY.nc`` lives at ``YYYY/TILE/`` under the data root. It has
one group per Sentinel-2 band (variable ``<band>(time, y, x)``, uint16, at the band's native
resolution), groups ``labels`` and ``parcels`` (uint32 ``(y, x)`` at 10 m) and root attributes
naming the patch. Validation reads metadata only (and the small label map), so checking the
whole real dataset costs little next to reading its pixels.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np

#: Band name -> ground resolution in metres, as in the S4A files.
BANDS: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}
ROOT_ATTRIBUTES = ("patch_full_name", "patch_year", "patch_name", "patch_country_code", "patch_tile")
#: Patch sides are multiples of the 60 m grid: 366 px at 10 m = 61 px at 60 m.
SIZE_QUANTUM = 61
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PATCH_NAME = re.compile(r"^(?P<year>\d{4})_(?P<tile>\d{2}[C-X][A-Z]{2})_patch_(?P<x>\d{2})_(?P<y>\d{2})\.nc$")
INDEX_COLUMNS = ("path", "year", "tile", "patch_x", "patch_y", "country", "n_dates")
_TIME_UNITS = re.compile(r"^\s*(?P<unit>\w+)\s+since\s+(?P<epoch>\d{4}-\d{2}-\d{2})(?:[ T](?P<clock>\d{2}:\d{2}:\d{2}))?")
_UNIT_TO_NUMPY = {
    "days": "D", "day": "D", "hours": "h", "hour": "h", "minutes": "m", "minute": "m",
    "seconds": "s", "second": "s", "milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns",
}


def band_side(size: int, band: str) -> int:
    """Pixels per side of ``band`` for a patch of ``size`` 10 m pixels: enough to cover the patch.

    366 -> 183 at 20 m and 61 at 60 m, as in S4A; for other sizes the coarse grid is rounded up
    (61 -> 31 at 20 m, 11 at 60 m), so repeating it to 10 m and cropping to ``size`` covers the patch.
    """
    resolution = BANDS[band]
    return -(-size * 10 // resolution)


class InvalidPatch(ValueError):
    """One S4A file with everything found wrong with it."""

    def __init__(self, path: Path, defects: list[str]):
        self.path = Path(path)
        self.defects = defects
        super().__init__(f"{path}: " + "; ".join(defects))


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
    """Parse ``YYYY_TILE_patch_XX_YY.nc``; raise ValueError saying what was expected."""
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


def decode_time(values: np.ndarray, units: str) -> np.ndarray:
    """CF ``<unit> since <date>`` numbers to datetime64[ns]; ValueError on units we cannot read."""
    match = _TIME_UNITS.match(units or "")
    if not match or match["unit"].lower() not in _UNIT_TO_NUMPY:
        raise ValueError(f"time units {units!r} are not '<days|hours|seconds|...> since YYYY-MM-DD'")
    epoch = np.datetime64(match["epoch"] + ("T" + match["clock"] if match["clock"] else ""), "ns")
    unit = _UNIT_TO_NUMPY[match["unit"].lower()]
    return epoch + np.asarray(values).astype("int64").astype(f"timedelta64[{unit}]").astype("timedelta64[ns]")


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
        dates = decode_time(time[:].data if np.ma.isMaskedArray(time[:]) else time[:], getattr(time, "units", ""))
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
    if "crs" not in group.ncattrs():
        defects.append(f"{band}: attribute 'crs' missing")
    return int(variable.shape[0])


def validate_patch(path: str | Path, root: str | Path | None = None) -> PatchInfo:
    """Check one S4A file thoroughly; raise :class:`InvalidPatch` listing every defect found.

    ``root`` is the data root the index path is made relative to (default: the file's folder).
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
    with dataset:
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
                defects.append(f"group {group_name!r} missing")
                continue
            variable = _check_grid(group, group_name, ("y", "x"), "uint32", None, defects, group_name)
            if variable is None:
                continue
            height, width = variable.shape
            if height != width or height % SIZE_QUANTUM or height == 0:
                defects.append(f"{group_name}: shape {variable.shape}, expected square with a side multiple of 61")
            elif size is None:
                size = height
            elif height != size:
                defects.append(f"{group_name}: shape {variable.shape} differs from labels ({size}, {size})")
        n_dates = [_check_band(dataset, band, size, year, defects) for band in BANDS]
    if defects:
        raise InvalidPatch(path, defects)
    assert name is not None and size is not None
    relative = path.relative_to(root).as_posix() if root is not None else path.name
    return PatchInfo(relative, name.year, name.tile, name.x, name.y,
                     str(attr["patch_country_code"]), max(n_dates), size)


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
