"""The Sentinel-2 bands of an S4A patch and their grids: the one fact every stage agrees on.

Kept apart from the netCDF reader (:mod:`cropseg.s4a.netcdf`) because params validation
(``medians.bands``) needs the band names and every stage loads params: importing the reader there
would make an edit of the file format rerun training and evaluation.
"""

from __future__ import annotations

#: Band name -> ground resolution in metres, as in the S4A files.
BANDS: dict[str, int] = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}


def band_side(size: int, band: str) -> int:
    """Pixels per side of ``band`` for a patch of ``size`` 10 m pixels: enough to cover the patch.

    366 -> 183 at 20 m and 61 at 60 m, as in S4A; for other sizes the coarse grid is rounded up
    (61 -> 31 at 20 m, 11 at 60 m), so repeating it to 10 m and cropping to ``size`` covers the patch.
    """
    resolution = BANDS[band]
    return -(-size * 10 // resolution)
