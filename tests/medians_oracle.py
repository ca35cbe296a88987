"""The S4A authors' medians recipe in xarray: the oracle the fast path is tested against.

Follows Orion-AI-Lab/S4A-Models ``export_medians_multi.py`` (``get_medians``, ``get_labels``):
``groupby_bins`` on the period edges (right-closed, labelled by their start), median, resample
to the period frequency so missing periods exist as NaN, ``interpolate_na`` linear with
extrapolation, repeat coarse bands to 10 m, stack, cut into windows. Slow on purpose (a scipy
interpolator per pixel): used by tests and ``bench/medians.py``, never by the stage.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import xarray as xr

from cropseg.s4a.netcdf import BANDS


def xarray_medians(path: str | Path, bands: list[str], freq: str = "1MS", window: int = 61
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(sub_y, sub_x, periods, bands, window, window) float32 and (sub_y, sub_x, window, window) uint32."""
    with netCDF4.Dataset(path, "r") as netcdf:
        year = int(netcdf.patch_year)
        date_range = pd.date_range(start=f"{year}-01-01", end=f"{year + 1}-01-01", freq=freq)
        periods = len(date_range) - 1
        stacked = []
        size = netcdf["labels"]["labels"].shape[0]
        for band in bands:
            data = xr.open_dataset(xr.backends.NetCDF4DataStore(netcdf[band]))
            data = data.groupby_bins("time", bins=date_range, right=True, include_lowest=False,
                                     labels=date_range[:-1]).median(dim="time")
            # upsample so that periods without data exist (as NaN); a no-op where groupby_bins keeps them
            data = data.resample(time_bins=freq).median(dim="time_bins")
            data = data.reindex(time_bins=date_range[:-1])
            data = data.interpolate_na(dim="time_bins", method="linear", fill_value="extrapolate")
            values = data[band].values
            ratio = BANDS[band] // 10
            if ratio != 1:
                values = np.repeat(np.repeat(values, ratio, axis=1), ratio, axis=2)
            values = values[:, :size, :size]  # a coarse grid may overhang a small patch
            assert values.shape[0] == periods
            stacked.append(values.astype(np.float32))
        labels = xr.open_dataset(xr.backends.NetCDF4DataStore(netcdf["labels"]))["labels"].values
    medians = np.stack(stacked, axis=1)  # (periods, bands, size, size)
    sub = size // window
    medians = medians.reshape(periods, len(bands), sub, window, sub, window).transpose(2, 4, 0, 1, 3, 5)
    labels = labels.reshape(sub, window, sub, window).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(medians), np.ascontiguousarray(labels.astype(np.uint32))
