"""Where S4A patches are on Earth: MGRS tile origins, UTM CRS and patch footprints in lon/lat.

Which tiles and years S4A has is :mod:`cropseg.s4a.tiles` (no pyproj needed there).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyproj import CRS, Transformer

#: Side of a Sentinel-2 tile in 10 m pixels (109.8 km); 30 x 30 patches of 366 pixels.
TILE_PIXELS = 10980
_COLUMN_SETS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"
#: MGRS latitude bands (8 degrees each from 80S); X is 12 degrees.
_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"


@dataclass(frozen=True)
class TileGrid:
    """A tile's UTM CRS and the map coordinates of its upper-left corner."""

    epsg: int
    x0: float
    y0: float

    @property
    def crs_attr(self) -> str:
        """CRS as written in S4A files (``+init=epsg:32631``)."""
        return f"+init=epsg:{self.epsg}"


def tile_grid(tile: str) -> TileGrid:
    """UTM grid of an MGRS tile, derived from its zone, latitude band and 100 km square letters.

    The northing is resolved to the 2000 km cycle that falls inside the latitude band; good to
    the 100 km square, which is what placing synthetic patches and choosing DEM tiles needs.
    """
    zone, band, col, row = int(tile[:2]), tile[2], tile[3], tile[4]
    north = band >= "N"
    epsg = (32600 if north else 32700) + zone
    easting = (_COLUMN_SETS[(zone - 1) % 3].index(col) + 1) * 100_000
    row_index = _ROW_LETTERS.index(row) - (5 if zone % 2 == 0 else 0)
    base = (row_index % 20) * 100_000
    band_south = -80 + 8 * _LAT_BANDS.index(band)
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    _, band_northing = to_utm.transform(-177.0 + 6 * (zone - 1), band_south)
    # the first northing of this 100 km row (period 2000 km) not south of the band's edge
    northing = base + 2_000_000 * max(0, -(-(band_northing - 100_000 - base) // 2_000_000))
    return TileGrid(epsg, float(easting), float(northing + TILE_PIXELS * 10))


def parse_epsg(crs_attr: str) -> int | None:
    """EPSG code from an S4A ``crs`` attribute such as ``+init=epsg:32631`` or ``EPSG:32631``.

    Returns:
        The code, or None for a CRS that has none (a custom PROJ string).

    Raises:
        pyproj.exceptions.CRSError: the text is not a CRS.
    """
    return CRS.from_user_input(crs_attr.replace("+init=", "")).to_epsg()


def footprint_lonlat(epsg: int, x_min: float, y_min: float, x_max: float, y_max: float,
                     densify: int = 8) -> tuple[float, float, float, float]:
    """Bounding box (lon_min, lat_min, lon_max, lat_max) of a map rectangle, edges densified.

    Args:
        epsg: the rectangle's CRS (a UTM zone for S4A).
        x_min: west edge, in that CRS.
        y_min: south edge.
        x_max: east edge.
        y_max: north edge.
        densify: points added along each edge before transforming, so curved edges are covered.
    """
    transformer = Transformer.from_crs(epsg, 4326, always_xy=True)
    return transformer.transform_bounds(x_min, y_min, x_max, y_max, densify_pts=densify)
