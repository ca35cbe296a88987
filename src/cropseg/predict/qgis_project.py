"""``cropseg.qgs``: one QGIS project that opens the whole prediction folder.

One layer group per tile-year: the parcel layer (GeoPackage, filled by agreement with the
declaration, labelled "declared → predicted confidence") above the crop-map mosaic (VRT, paletted
with the class names). Paths are relative to the project (``Paths/Absolute = false``), so the
folder can be moved or copied as a whole. Written as plain XML in QGIS 3's project format (the
renderer blocks are the ``.qml`` styles'), so writing it needs no QGIS; ``tests/test_qgis.py``
opens it with PyQGIS where QGIS is installed and checks that every layer is valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from rasterio.crs import CRS

from ..core.atomic import atomic_file

PROJECT = "cropseg.qgs"


@dataclass(frozen=True)
class TileYearLayers:
    """The layers of one tile-year: mosaic VRT, parcel GeoPackage (or None), relative to the project."""

    name: str
    crs: CRS
    mosaic: str
    parcels: str | None
    extent: tuple[float, float, float, float]


def _between(text: str, start: str, end: str) -> str:
    a = text.index(start)
    return text[a:text.index(end, a) + len(end)]


def _srs(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return ("<srs><spatialrefsys>"
            f"<wkt>{escape(crs.to_wkt())}</wkt><proj4>{escape(crs.to_proj4())}</proj4>"
            f"<srid>{epsg or 0}</srid><authid>{escape(f'EPSG:{epsg}' if epsg else '')}</authid>"
            "</spatialrefsys></srs>")


def _extent(box: tuple[float, float, float, float]) -> str:
    return f"<extent><xmin>{box[0]!r}</xmin><ymin>{box[1]!r}</ymin><xmax>{box[2]!r}</xmax><ymax>{box[3]!r}</ymax></extent>"


def project_xml(layers: Sequence[TileYearLayers], raster_style: str, parcel_style: str) -> str:
    """The project file's text.

    Args:
        layers: one entry per tile-year, in the order they appear in the layer tree.
        raster_style: the mosaic ``.qml`` (its ``<pipe>`` is used).
        parcel_style: the parcel ``.qml`` (its renderer and labeling are used).
    """
    pipe = _between(raster_style, "<pipe>", "</pipe>")
    renderer = _between(parcel_style, "<renderer-v2", "</renderer-v2>")
    labeling = _between(parcel_style, "<labeling", "</labeling>")
    tree, maplayers, order = [], [], []
    for entry in layers:
        children = []
        ids = []
        if entry.parcels is not None:
            pid = f"parcels_{entry.name}"
            source = f"{entry.parcels}|layername=parcels"
            ids.append(pid)
            children.append(f'      <layer-tree-layer id="{pid}" name="parcels {escape(entry.name)}" '
                            f'source={quoteattr(source)} providerKey="ogr" checked="Qt::Checked" expanded="1"/>')
            maplayers.append(
                f'    <maplayer type="vector" geometry="Polygon" wkbType="MultiPolygon" labelsEnabled="1" '
                f'styleCategories="AllStyleCategories" hasScaleBasedVisibilityFlag="0" minScale="0" maxScale="0">\n'
                f"      {_extent(entry.extent)}\n"
                f"      <id>{pid}</id>\n      <datasource>{escape(source)}</datasource>\n"
                f"      <layername>parcels {escape(entry.name)}</layername>\n      {_srs(entry.crs)}\n"
                f"      <provider encoding=\"UTF-8\">ogr</provider>\n"
                f"      {renderer}\n      {labeling}\n"
                "      <layerOpacity>1</layerOpacity>\n    </maplayer>")
        mid = f"mosaic_{entry.name}"
        ids.append(mid)
        children.append(f'      <layer-tree-layer id="{mid}" name="crop map {escape(entry.name)}" '
                        f'source={quoteattr(entry.mosaic)} providerKey="gdal" checked="Qt::Checked" expanded="1"/>')
        maplayers.append(
            '    <maplayer type="raster" styleCategories="AllStyleCategories" hasScaleBasedVisibilityFlag="0" '
            'minScale="0" maxScale="0">\n'
            f"      {_extent(entry.extent)}\n"
            f"      <id>{mid}</id>\n      <datasource>{escape(entry.mosaic)}</datasource>\n"
            f"      <layername>crop map {escape(entry.name)}</layername>\n      {_srs(entry.crs)}\n"
            "      <provider>gdal</provider>\n"
            f"      {pipe}\n    </maplayer>")
        tree.append(f'    <layer-tree-group name={quoteattr(entry.name)} checked="Qt::Checked" expanded="1">\n'
                    + "\n".join(children) + "\n    </layer-tree-group>")
        order += ids
    crs = layers[0].crs if layers else CRS.from_epsg(4326)
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.22.16" projectname="cropseg crop maps">\n'
            "  <title>cropseg crop maps</title>\n"
            f"  <projectCrs>{_srs(crs)[5:-6]}</projectCrs>\n"
            '  <layer-tree-group expanded="1" checked="Qt::Checked" name="">\n' + "\n".join(tree) + "\n"
            '    <custom-order enabled="0">' + "".join(f"<item>{i}</item>" for i in order) + "</custom-order>\n"
            "  </layer-tree-group>\n"
            "  <projectlayers>\n" + "\n".join(maplayers) + "\n  </projectlayers>\n"
            "  <properties>\n    <Paths>\n      <Absolute type=\"bool\">false</Absolute>\n    </Paths>\n"
            "  </properties>\n"
            "</qgis>\n")


def write_project(path: Path, layers: Sequence[TileYearLayers], raster_style: str, parcel_style: str) -> None:
    """Write :func:`project_xml` to ``path`` atomically."""
    with atomic_file(path, "w") as handle:
        handle.write(project_xml(layers, raster_style, parcel_style))
