"""The parcel layer: polygons of a patch's parcel raster and one GeoPackage (+ CSV) per tile-year.

Polygons come from the parcel raster itself (:func:`rasterio.features.shapes`, 4-connected, on the
patch's transform): each polygon follows pixel edges, so rasterising it back gives the raster
exactly; a parcel in several pieces is one MultiPolygon. A parcel that crosses a patch edge is one
row per patch (``patch`` + ``parcel_id`` is the key), as the S4A files cut it.

The GeoPackage is written by GeoPandas through pyogrio (GDAL's GPKG driver) with GDAL's
``OGR_CURRENT_DATE`` fixed, so the file holds no wall-clock timestamp and reruns write the same
bytes. :func:`parcel_style` is the QGIS style: fill by ``agreement``, label "declared → predicted".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS

from ..core.atomic import atomic_file

LAYER = "parcels"
FIXED_DATE = "2000-01-01T00:00:00.000Z"  # GeoPackage last_change: fixed, so the bytes depend on the data only
AGREEMENT_COLOURS = {"agree": ("26,150,65", "prediction agrees with the declaration"),
                     "disagree": ("253,174,97", "prediction differs (low confidence)"),
                     "suspect": ("215,25,28", "suspect: confident contradiction"),
                     "undeclared": ("189,189,189", "no declaration in the label set")}


def parcel_polygons(parcels: np.ndarray, transform: Affine) -> dict[int, object]:
    """Parcel id -> shapely (Multi)Polygon in the raster's CRS, for every id > 0 of ``parcels``."""
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import shape

    ids, inverse = np.unique(parcels, return_inverse=True)
    if len(ids) and ids.max() > 0 and len(ids) >= 2**31:
        raise ValueError("more parcels in one patch than an int32 raster can number")
    numbered = inverse.reshape(parcels.shape).astype(np.int32)  # rasterio's shapes takes no uint32
    pieces: dict[int, list] = defaultdict(list)
    for geometry, value in shapes(numbered, mask=parcels > 0, connectivity=4, transform=transform):
        pieces[int(ids[int(value)])].append(shape(geometry))
    return {pid: (parts[0] if len(parts) == 1 else shapely.union_all(parts)) for pid, parts in sorted(pieces.items())}


def rank_suspects(table: pd.DataFrame) -> pd.DataFrame:
    """Add ``suspect_rank`` (1 = the most confident contradiction of the table; 0 = not suspect)."""
    table = table.copy()
    order = table[table.suspect].sort_values(["confidence", "patch", "parcel_id"], ascending=[False, True, True])
    table["suspect_rank"] = 0
    table.loc[order.index, "suspect_rank"] = np.arange(1, len(order) + 1)
    return table


def write_parcel_layer(gpkg: Path, csv: Path, table: pd.DataFrame, geometries: Sequence[object], crs: CRS) -> None:
    """One tile-year's parcels: a GeoPackage layer ``parcels`` and the same rows as CSV (no geometry).

    Args:
        gpkg: the ``.gpkg`` to write (replaced through a temporary sibling).
        csv: the ``.csv`` beside it.
        table: one row per parcel (``patch``, ``parcel_id``, the :mod:`cropseg.nn.parcels` columns, names).
        geometries: one polygon per row of ``table``.
        crs: the tile's CRS (one UTM zone per tile).
    """
    import geopandas as gpd
    import pyogrio

    frame = gpd.GeoDataFrame(table.reset_index(drop=True), geometry=list(geometries), crs=crs)
    frame["suspect"] = frame["suspect"].astype(bool)
    gpkg.parent.mkdir(parents=True, exist_ok=True)
    tmp = gpkg.with_name(f".{gpkg.name}.tmp.gpkg")
    previous = pyogrio.get_gdal_config_option("OGR_CURRENT_DATE")
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_DATE})
    try:
        tmp.unlink(missing_ok=True)
        # GeoPackage 1.2, not the 1.4 of recent GDAL: QGIS on older GDAL (Debian 12: QGIS 3.22, GDAL 3.6)
        # warns that 1.4 "may only be partially supported"
        frame.to_file(tmp, layer=LAYER, driver="GPKG", engine="pyogrio", dataset_options={"VERSION": "1.2"})
        tmp.replace(gpkg)
    finally:
        pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": previous})
        tmp.unlink(missing_ok=True)
    with atomic_file(csv, "w") as handle:
        table.to_csv(handle, index=False, float_format="%.6g", lineterminator="\n")


def parcel_style() -> str:
    """QGIS vector style (.qml): fill by ``agreement``, text label ``declared_name → predicted_name``."""
    categories, symbols = [], []
    for k, (value, (rgb, label)) in enumerate(AGREEMENT_COLOURS.items()):
        categories.append(f'      <category value="{value}" symbol="{k}" label={quoteattr(label)} render="true"/>')
        symbols.append(
            f'      <symbol type="fill" name="{k}" alpha="0.6" clip_to_extent="1" force_rhr="0">\n'
            '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
            '          <Option type="Map">\n'
            f'            <Option name="color" type="QString" value="{rgb},255"/>\n'
            '            <Option name="outline_color" type="QString" value="35,35,35,255"/>\n'
            '            <Option name="outline_width" type="QString" value="0.3"/>\n'
            '            <Option name="style" type="QString" value="solid"/>\n'
            '          </Option>\n'
            f'          <prop k="color" v="{rgb},255"/>\n'
            '          <prop k="outline_color" v="35,35,35,255"/>\n'
            '          <prop k="outline_width" v="0.3"/>\n'
            '          <prop k="style" v="solid"/>\n'
            '        </layer>\n'
            '      </symbol>')
    label = "concat(\"declared_name\", ' → ', \"predicted_name\", ' ', format_number(\"confidence\", 2))"
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28.0" styleCategories="Symbology|Labeling">\n'
            '  <renderer-v2 type="categorizedSymbol" attr="agreement" enableorderby="0" forceraster="0" '
            'symbollevels="0">\n'
            "    <categories>\n" + "\n".join(categories) + "\n    </categories>\n"
            "    <symbols>\n" + "\n".join(symbols) + "\n    </symbols>\n"
            "  </renderer-v2>\n"
            '  <labeling type="simple">\n'
            '    <settings calloutType="simple">\n'
            f'      <text-style fieldName={quoteattr(label)} isExpression="1" fontSize="8" textColor="0,0,0,255"/>\n'
            '      <text-buffer bufferDraw="1" bufferSize="0.8" bufferColor="255,255,255,255"/>\n'
            '      <placement placement="1"/>\n'
            '      <rendering scaleVisibility="1" scaleMax="1" scaleMin="25000"/>\n'
            "    </settings>\n"
            "  </labeling>\n"
            '  <layerGeometryType>2</layerGeometryType>\n'
            "</qgis>\n")
