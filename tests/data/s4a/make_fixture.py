"""Write the tiny S4A fixture files beside this script, the way the S4A authors wrote theirs.

Not with cropseg's generator: each raster is an ``xarray.DataArray`` carrying the attributes
``xarray.open_rasterio`` gave a GeoTIFF band (``transform`` in affine order a..f, ``crs`` as
``+init=epsg:N``, ``res``, ``is_tiled``, ``nodatavals``, ``scales``, ``offsets``,
``AREA_OR_POINT``) and the scalar ``band`` coordinate left by selecting band 1, and each group is
appended with ``to_netcdf(path, group=NAME, mode="a")``, time encoded however xarray chooses
(see https://docs.xarray.dev/en/v0.20.1/generated/xarray.open_rasterio.html and the listing of
``2020_31TCG_patch_14_14.nc`` in https://github.com/Orion-AI-Lab/S4A's README for the layout).

Four 61 px patches over two tiles and two years (each file ~180 kB, mostly HDF5 headers); dates with a time of day, one at 00:00 on the
1st of a month, no date in January or December (empty first and last months); every band at its
own resolution (61 px at 10 m, 31 at 20 m, 11 at 60 m). One file stores time as float days since
``2020-1-1`` (fractional values), the others as xarray's default integer encoding.

Run from the repository root: ``.venv/bin/python tests/data/s4a/make_fixture.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

HERE = Path(__file__).resolve().parent
SIZE = 61
BANDS = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
         "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20}
EPSG = 32631
#: Upper-left corners (UTM 31N) of tiles 31TCG and 31TCJ.
ORIGIN = {"31TCG": (300000.0, 4709800.0), "31TCJ": (300000.0, 4909800.0)}
COUNTRY = {"31TCG": "ES", "31TCJ": "FR"}
#: Crop codes with a clearly different seasonal curve each (S4A / FAO ICC codes).
CROPS = {110: (60, 175), 120: (150, 265), 330: (110, 285), 435: (15, 150)}
PATCHES = [(2019, "31TCG", 10, 10), (2019, "31TCJ", 5, 5), (2020, "31TCG", 10, 11), (2020, "31TCJ", 5, 6)]
FLOAT_TIME = (2020, "31TCJ", 5, 6)


def dates(year: int) -> pd.DatetimeIndex:
    """Acquisitions with a time of day (as Sentinel-2's), one at 00:00 on the 1st of March."""
    return pd.DatetimeIndex([f"{year}-02-14T10:56:21", f"{year}-03-01T00:00:00", f"{year}-05-20T10:46:29",
                             f"{year}-07-09T10:56:31", f"{year}-10-02T10:50:19"])


def rasterio_attrs(res: float, x0: float, y0: float) -> dict:
    """The attributes ``xarray.open_rasterio`` (xarray <= 0.20) put on a GeoTIFF's DataArray."""
    return {"transform": (res, 0.0, x0, 0.0, -res, y0), "crs": f"+init=epsg:{EPSG}", "res": (res, res),
            "is_tiled": 0, "nodatavals": (np.nan,), "scales": (1.0,), "offsets": (0.0,), "AREA_OR_POINT": "Area"}


def grid(res: int, x0: float, y0: float) -> tuple[np.ndarray, np.ndarray, int]:
    side = -(-SIZE * 10 // res)
    x = x0 + res * (np.arange(side) + 0.5)
    y = y0 - res * (np.arange(side) + 0.5)
    return x, y, side


def fields(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and parcel ids: a 4 x 4 checkerboard of rectangular parcels with 1 px margins."""
    edges = np.linspace(0, SIZE, 5).astype(int)
    labels = np.zeros((SIZE, SIZE), np.uint32)
    parcels = np.zeros((SIZE, SIZE), np.uint32)
    codes = np.array(sorted(CROPS), np.uint32)
    for i in range(4):
        for j in range(4):
            code = codes[rng.integers(len(codes))] if rng.random() > 0.1 else 0
            block = np.s_[edges[i] + 1:edges[i + 1] - 1, edges[j] + 1:edges[j + 1] - 1]
            labels[block] = code
            parcels[block] = 0 if code == 0 else 4 * i + j + 1
    return labels, parcels


def reflectance(labels: np.ndarray, when: pd.DatetimeIndex, band: str, rng: np.random.Generator) -> np.ndarray:
    """(time, y, x) uint16 at 10 m: soil vs. vegetation mix following each crop's season."""
    doy = when.day_of_year.to_numpy(np.float64)
    veg = np.zeros((len(when),) + labels.shape, np.float64)
    for code, (green, senes) in CROPS.items():
        curve = 1 / (1 + np.exp(-(doy - green) / 8)) / (1 + np.exp((doy - senes) / 8))
        veg[:, labels == code] = curve[:, None]
    nir = band in ("B06", "B07", "B08", "B8A")
    soil, leaf = (2400, 4200) if nir else (1800, 400)
    values = soil * (1 - veg) + leaf * veg + rng.integers(0, 2, veg.shape)  # 1 bit of noise: keeps the files small
    return values.astype(np.uint16)


def coarse(values: np.ndarray, res: int) -> np.ndarray:
    """Nearest sample at the centre of each res/10 block (the last block may be partial)."""
    factor = res // 10
    if factor == 1:
        return values
    centres = np.minimum(np.arange(-(-SIZE // factor)) * factor + factor // 2, SIZE - 1)
    return values[..., centres[:, None], centres[None, :]]


def write_patch(year: int, tile: str, px: int, py: int) -> Path:
    name = f"{year}_{tile}_patch_{px:02d}_{py:02d}"
    path = HERE / str(year) / tile / f"{name}.nc"
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([year, px, py, int(tile[:2])])
    x0 = ORIGIN[tile][0] + px * 3660.0
    y0 = ORIGIN[tile][1] - py * 3660.0
    labels, parcels = fields(rng)
    when = dates(year)
    root = {"title": "S4A Patch Dataset", "authors": "cropseg test fixture (after Papoutsis I., Sykas D., "
            "Zografakis D., Sdraka M.)", "patch_full_name": name, "patch_year": str(year),
            "patch_name": f"patch_{px:02d}_{py:02d}", "patch_country_code": COUNTRY[tile], "patch_tile": tile,
            "creation_date": "27 Apr 2021", "references": "Documentation available at .",
            "institution": "National Observatory of Athens.", "version": "21.03"}
    xr.Dataset(attrs=root).to_netcdf(path, mode="w", format="NETCDF4")
    compress = {"zlib": True, "complevel": 9, "shuffle": True}
    for band, res in BANDS.items():
        x, y, _ = grid(res, x0, y0)
        array = xr.DataArray(coarse(reflectance(labels, when, band, rng), res), dims=("time", "y", "x"),
                             coords={"time": when, "y": y, "x": x, "band": 1}, name=band,
                             attrs=rasterio_attrs(res, x0, y0))
        encoding = {band: compress}
        if (year, tile, px, py) == FLOAT_TIME:
            encoding["time"] = {"units": f"days since {year}-1-1", "dtype": "float64"}
        array.to_dataset().to_netcdf(path, group=band, mode="a", encoding=encoding)
    for group, values in (("labels", labels), ("parcels", parcels)):
        x, y, _ = grid(10, x0, y0)
        array = xr.DataArray(values, dims=("y", "x"), coords={"y": y, "x": x, "band": 1}, name=group,
                             attrs=rasterio_attrs(10, x0, y0))
        array.to_dataset().to_netcdf(path, group=group, mode="a", encoding={group: compress})
    return path


def main() -> None:
    for patch in PATCHES:
        print(write_patch(*patch).relative_to(HERE))


if __name__ == "__main__":
    main()
