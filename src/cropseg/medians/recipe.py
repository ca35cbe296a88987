"""The medians of one patch: per-period medians of every band, cut into sub-patches (the S4A recipe).

The recipe is the one the S4A authors published (Orion-AI-Lab/S4A-Models,
``export_medians_multi.py``, ``get_medians``), reproduced number for number:

1. periods: ``bins = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq=freq)`` with
   ``year`` the root attribute ``patch_year``; period ``i`` is the right-closed interval
   ``(bins[i], bins[i + 1]]`` (``groupby_bins(..., right=True, include_lowest=False)``). So an
   acquisition on Feb 1 00:00 belongs to January, one on Jan 1 00:00 of the patch year belongs to
   no period and is dropped, as are dates outside the year.
2. per band and period: the median over the period's acquisitions of the stored uint16 values
   (an even count gives the mean of the two middle values, as ``np.median``).
3. empty periods: linear interpolation in time, linear extrapolation at the ends. A period is
   dated by its **start** ``bins[i]`` (the authors label the bins ``date_range[:-1]``), on the
   nanosecond time axis, and the arithmetic is exactly ``scipy.interpolate.interp1d(kind="linear",
   fill_value="extrapolate")``, which xarray's ``interpolate_na(method="linear",
   fill_value="extrapolate")`` calls: the two nearest non-empty periods around the empty one, or the
   first two / last two at the ends, ``(y_hi - y_lo) / (x_hi - x_lo) * (x - x_lo) + y_lo`` in float64.
4. 20 m and 60 m bands are repeated (``np.repeat`` on both axes) to the 10 m grid (and cropped
   to the patch where the coarse grid overhangs it: S4A's 366 px fit exactly, but a 61 px
   synthetic patch has 31 px at 20 m, see :func:`cropseg.s4a.bands.band_side`); then bands are
   stacked in the ``medians.bands`` order and the patch is cut into non-overlapping
   ``window`` x ``window`` sub-patches, row-major; the labels are cut alike.

Decisions where the recipe is silent or would produce garbage:

* Values are taken as stored (uint16 DN, no masking): S4A band variables declare no fill value.
  A band that declares ``_FillValue``/``missing_value`` *and* contains it is an error (xarray
  would mask those pixels to NaN and the per-pixel result would differ).
* A band with no acquisition in any period, or in only one period, is an error: xarray's
  ``interpolate_na`` leaves an all-but-one-NaN series untouched, so the recipe would write NaN.
* A patch side that ``window`` does not divide is an error (the authors pad; our windows tile
  S4A's 366 px exactly).

The fast path reads each band once (netCDF4, one call per variable), then for every period runs
a data-independent *median selection network* on the period's acquisitions: a Batcher odd-even
sorting network pruned to the comparators that reach the middle element(s), executed as
``np.minimum``/``np.maximum`` over whole contiguous uint16 images, in place. No sort, no gather,
no float conversion before the median; interpolation touches only the empty periods. On a
366 x 366 patch with 4 bands and ~65 dates the medians cost a few milliseconds next to ~140 ms
of decompression (see ``bench/medians.py`` and the README).

``dtype: uint16`` rounds to whole DN and **clips to 0..65535**: the linear extrapolation of empty
first/last periods can go below 0 (measured on S4A: a January at -5,635 DN) or, rarely, above the
uint16 range; float32 (the default) keeps those values as the recipe computes them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd

from ..core.params import Medians
from ..s4a.bands import BANDS, band_side
from ..s4a.netcdf import decode_time

TEN_METRE_BANDS = tuple(band for band, metres in BANDS.items() if metres == 10)


class MediansError(RuntimeError):
    """A patch cannot be turned into medians; the message names the file and the band or group."""


# ---------------------------------------------------------------------------------------------
# periods


def period_edges(year: int, freq: str) -> np.ndarray:
    """The bin edges of ``year`` as int64 nanoseconds since 1970 (``len - 1`` periods).

    Args:
        year: the patch year (``patch_year``).
        freq: ``medians.freq``, a pandas offset alias (``1MS``: calendar months).
    """
    edges = pd.date_range(f"{year}-01-01", f"{year + 1}-01-01", freq=freq)
    return edges.as_unit("ns").asi8.copy()


def period_starts(year: int, freq: str) -> list[str]:
    """ISO dates of the periods' starts: the date each period stands for."""
    return [str(np.datetime64(int(t), "ns"))[:10] for t in period_edges(year, freq)[:-1]]


def period_of(times_ns: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Period index of each time (``(edges[i], edges[i+1]]`` -> i); -1 where outside every period."""
    index = np.searchsorted(edges, times_ns, side="left") - 1
    index[(index < 0) | (index >= len(edges) - 1)] = -1
    return index


# ---------------------------------------------------------------------------------------------
# the median selection network


@functools.lru_cache(maxsize=None)
def _batcher(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sorting network for ``n`` items (padded to a power of two with
    +inf, whose comparators are no-ops and are dropped)."""
    size = 1
    while size < n:
        size *= 2
    comparators = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        comparators.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple((a, b) for a, b in comparators if b < n)


@functools.lru_cache(maxsize=None)
def median_network(n: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """Comparators ``(lo, hi, keep_min, keep_max)`` after which position ``n // 2`` (odd ``n``) or
    positions ``n // 2 - 1`` and ``n // 2`` (even ``n``) hold the middle order statistics.

    Pruned backwards from the middle: a comparator neither of whose outputs is needed later is
    dropped, and only the needed output (min into ``lo``, max into ``hi``) is computed. For even
    ``n`` the last comparator between the two middle positions is dropped too: their sum is all
    the median needs.

    Raises:
        ValueError: ``n`` is below 1.
    """
    if n < 1:
        raise ValueError("a median needs at least one value")
    middle = (n // 2,) if n % 2 else (n // 2 - 1, n // 2)
    needed = set(middle)
    kept = []
    comparators = list(reversed(_batcher(n)))
    if n % 2 == 0:
        for position, (a, b) in enumerate(comparators):
            if a in needed or b in needed:
                if (a, b) == middle:
                    del comparators[position]
                break
    for a, b in comparators:
        keep_min, keep_max = a in needed, b in needed
        if keep_min or keep_max:
            kept.append((a, b, keep_min, keep_max))
            needed |= {a, b}
    return tuple(reversed(kept))


def _select_middle(rows: list[np.ndarray], scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run the median network on ``rows`` (same-shape arrays, overwritten); return the middle
    pair (the same array twice for an odd count)."""
    rows = list(rows)
    n = len(rows)
    for a, b, keep_min, keep_max in median_network(n):
        if keep_min and keep_max:
            np.minimum(rows[a], rows[b], out=scratch)
            np.maximum(rows[a], rows[b], out=rows[b])
            rows[a], scratch = scratch, rows[a]
        elif keep_min:
            np.minimum(rows[a], rows[b], out=rows[a])
        else:
            np.maximum(rows[a], rows[b], out=rows[b])
    if n % 2:
        return rows[n // 2], rows[n // 2]
    return rows[n // 2 - 1], rows[n // 2]


# ---------------------------------------------------------------------------------------------
# one patch


@dataclass
class PatchMedians:
    """The result for one patch, before it is written."""

    medians: np.ndarray  # (sub_y, sub_x, periods, bands, window, window)
    labels: np.ndarray  # (sub_y, sub_x, window, window) uint32
    year: int
    size: int


def _decode_times(variable: netCDF4.Variable) -> np.ndarray:
    """Acquisition times in ns since 1970, decoded by the CF library (:func:`cropseg.s4a.netcdf.decode_time`)."""
    return decode_time(variable[:], getattr(variable, "units", ""), getattr(variable, "calendar", None)).astype("int64")


def _read_grid(group: netCDF4.Group, name: str, dims: tuple[str, ...], dtype: str, where: str) -> np.ndarray:
    variable = group.variables.get(name)
    if variable is None:
        raise MediansError(f"{where}: variable {name!r} missing")
    if variable.dimensions != dims or variable.dtype != np.dtype(dtype):
        raise MediansError(f"{where}: {name}{variable.dimensions} {variable.dtype}, expected {name}{dims} {dtype}")
    variable.set_auto_maskandscale(False)
    try:
        values = variable[:]
    except Exception as error:  # netCDF4 raises RuntimeError/OSError/IndexError on bad chunks
        raise MediansError(f"{where}: cannot decode {name!r} ({type(error).__name__}: {error})") from None
    for attribute in ("_FillValue", "missing_value"):
        if attribute in variable.ncattrs():
            fill = np.asarray(variable.getncattr(attribute)).astype(values.dtype)
            count = int(np.isin(values, fill).sum())
            if count:
                raise MediansError(f"{where}: {count} value(s) equal {attribute}={fill.tolist()}; "
                                   "masked pixels are not supported")
    return values


def _open_with_year(path: Path) -> tuple[netCDF4.Dataset, int]:
    """Open one S4A file and read its ``patch_year`` (an int or, as published, a string); the
    caller closes the dataset. Errors name the file and what is wrong."""
    try:
        dataset = netCDF4.Dataset(path, "r")
    except (OSError, ValueError) as error:
        raise MediansError(f"{path}: cannot be decoded as netCDF-4 ({error})") from None
    try:
        return dataset, int(dataset.getncattr("patch_year"))
    except (AttributeError, TypeError, ValueError):
        dataset.close()
        raise MediansError(f"{path}: root attribute patch_year missing or not a year") from None


def compute_patch(path: str | Path, params: Medians) -> PatchMedians:
    """Read one S4A netCDF file and compute its medians and labels (see the module docstring).

    Args:
        path: the patch file.
        params: the ``medians`` params (bands, freq, window, dtype).

    Returns:
        The medians ``(sub_y, sub_x, periods, bands, window, window)`` (float32, or uint16 with
        ``dtype: uint16``), the labels cut alike, the patch year and size.

    Raises:
        MediansError: the file cannot be decoded, lacks ``patch_year``, a group, variable or
            time coordinate; a shape, dtype or fill value is wrong; the patch is not square or
            ``window`` does not divide it; or a band has acquisitions in fewer than two periods.
    """
    path = Path(path)
    window = params.window
    dataset, year = _open_with_year(path)
    with dataset:
        size = _patch_size(dataset, path, window)
        if "labels" in dataset.groups:
            labels = _read_grid(dataset.groups["labels"], "labels", ("y", "x"), "uint32", f"{path}: labels")
            if labels.shape != (size, size):
                raise MediansError(f"{path}: labels: shape {labels.shape}, expected ({size}, {size})")
        else:  # a season without declarations yet (predict): every pixel background, nothing scored
            labels = np.zeros((size, size), np.uint32)
        edges = period_edges(year, params.freq)
        n_periods = len(edges) - 1
        x_ns = edges[:-1].astype(np.float64)  # the date of each period: its start
        sub = size // window
        dtype = np.float32
        out = np.empty((sub, sub, n_periods, len(params.bands), window, window), dtype)

        for b, band in enumerate(params.bands):
            where = f"{path}: band {band}"
            group = dataset.groups.get(band)
            if group is None:
                raise MediansError(f"{where}: group missing")
            if "time" not in group.variables:
                raise MediansError(f"{where}: time coordinate missing")
            try:
                times = _decode_times(group.variables["time"])
            except Exception as error:
                raise MediansError(f"{where}: cannot decode time ({error})") from None
            factor = BANDS[band] // 10
            side = band_side(size, band)
            values = _read_grid(group, band, ("time", "y", "x"), "uint16", where)
            if values.shape != (len(times), side, side):
                raise MediansError(f"{where}: shape {values.shape}, expected ({len(times)}, {side}, {side}) "
                                   f"for a {size} px patch at {BANDS[band]} m")
            period = period_of(times, edges)
            filled = np.unique(period[period >= 0])
            if filled.size < 2:
                found = "no acquisition" if filled.size == 0 else "acquisitions in only 1 period"
                raise MediansError(f"{where}: {found} in the {n_periods} periods of {year} "
                                   f"(freq {params.freq}; {len(times)} dates in the file); at least 2 "
                                   f"non-empty periods are needed to interpolate")

            if factor == 1:
                def target(p: int, b: int = b) -> np.ndarray:
                    return out[:, :, p, b]

                def shaped(image: np.ndarray) -> np.ndarray:
                    return image.reshape(sub, window, sub, window).transpose(0, 2, 1, 3)
            else:
                native = np.empty((n_periods, side, side), dtype)

                def target(p: int) -> np.ndarray:
                    return native[p]

                def shaped(image: np.ndarray) -> np.ndarray:
                    return image

            scratch = np.empty((side, side), np.uint16)
            for p in filled:
                rows = [values[t] for t in np.flatnonzero(period == p)]
                low, high = _select_middle(rows, scratch)
                dest = target(p)
                if low is high:
                    np.copyto(dest, shaped(low))
                else:
                    np.add(shaped(low), shaped(high), out=dest, dtype=dtype)
                    dest *= dtype(0.5)
            for p in np.setdiff1d(np.arange(n_periods), filled):
                hi = int(np.clip(np.searchsorted(filled, p), 1, filled.size - 1))
                lo_p, hi_p = int(filled[hi - 1]), int(filled[hi])
                y_lo = target(lo_p).astype(np.float64)
                slope = (target(hi_p).astype(np.float64) - y_lo) / (x_ns[hi_p] - x_ns[lo_p])
                target(p)[...] = slope * (x_ns[p] - x_ns[lo_p]) + y_lo
            if factor > 1:
                full = native.repeat(factor, axis=1).repeat(factor, axis=2)[:, :size, :size]
                out[:, :, :, b] = full.reshape(n_periods, sub, window, sub, window).transpose(1, 3, 0, 2, 4)
            del values

    if params.dtype == "uint16":
        out = np.clip(np.rint(out), 0, 65535).astype(np.uint16)
    cut_labels = np.ascontiguousarray(labels.reshape(sub, window, sub, window).transpose(0, 2, 1, 3))
    return PatchMedians(out, cut_labels, year, size)


# ---------------------------------------------------------------------------------------------
# the plan pass: size and year only


def read_header(path: str | Path, window: int) -> tuple[int, int]:
    """``(size, year)`` of one patch, from its attributes and the labels' shape (nothing decoded):
    what the store plan needs to place every patch before any is computed.

    Args:
        path: the patch file.
        window: ``medians.window``, which must divide the patch side.

    Raises:
        MediansError: the file cannot be decoded, lacks ``patch_year`` or the ``labels``
            variable, or its labels are not square with a side ``window`` divides.
    """
    path = Path(path)
    dataset, year = _open_with_year(path)
    with dataset:
        return _patch_size(dataset, path, window), year


def _patch_size(dataset: netCDF4.Dataset, path: Path, window: int) -> int:
    """The patch side in 10 m pixels: from the ``labels`` raster or, in a file without labels (a
    season not declared yet), from the first 10 m band present; ``window`` must divide it."""
    if "labels" in dataset.groups:
        group, name = dataset.groups["labels"], "labels"
        if name not in group.variables:
            raise MediansError(f"{path}: labels: variable 'labels' missing")
        shape = group.variables[name].shape
    else:
        name = next((band for band in TEN_METRE_BANDS if band in dataset.groups
                     and band in dataset.groups[band].variables), None)
        if name is None:
            raise MediansError(f"{path}: neither a labels group nor a 10 m band group "
                               f"({', '.join(TEN_METRE_BANDS)}) to read the patch size from")
        shape = dataset.groups[name].variables[name].shape[-2:]
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] == 0:
        raise MediansError(f"{path}: {name}: shape {tuple(shape)}, expected a square patch")
    if shape[0] % window:
        raise MediansError(f"{path}: {name}: patch size {shape[0]} px is not a multiple of medians.window={window}")
    return int(shape[0])
