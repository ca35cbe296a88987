"""Crop maps GIS software opens: a Cloud-Optimised GeoTIFF per patch, a VRT mosaic, legend and QGIS style.

Per patch (:func:`write_patch_cog`) two uint8 bands on the patch's own grid: band 1 the class
(0 = background / no data, a colour table, class names as metadata), band 2 the confidence
(``round(255 * max probability)``, so 255 = certain; never 0 since max probability >= 1/classes).
Written as a GeoTIFF in memory, then copied by GDAL's COG driver (tiled 256, DEFLATE, internal
overviews by nearest neighbour: class values are never averaged) through a temporary sibling.
No timestamp goes into the files, so the same predictions give the same bytes.

A tile-year mosaic is a GDAL VRT (https://gdal.org/en/stable/drivers/raster/vrt.html): a small XML
file on the common grid of its patches (one CRS per tile) that references the patch COGs by
relative path, so it is never out of step with them and costs no copy. QGIS, GDAL and rasterio
open it like a raster. A ``.qml`` sidecar of the same name (a paletted renderer with the class
names) is applied by QGIS automatically when the layer is added.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.io import MemoryFile

from ..core.atomic import atomic_file
from ..s4a.grid import PatchGrid

BLOCK = 256
NODATA = 0


def _rgb255(colours: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(round(255 * c)) for c in rgb[:3]) for rgb in np.asarray(colours, dtype=float)]


def colour_table(colours: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class k -> RGBA, background (0, no data) transparent."""
    table = {k: (*rgb, 255) for k, rgb in enumerate(_rgb255(colours))}
    table[0] = (*table[0][:3], 0)
    return table


def confidence_uint8(max_probability: np.ndarray) -> np.ndarray:
    """Band 2's encoding: ``round(255 * p)``, clipped to 1..255 (0 stays the no-data value)."""
    return np.clip(np.rint(np.asarray(max_probability, dtype=np.float64) * 255), 1, 255).astype(np.uint8)


def write_patch_cog(path: Path, classes: np.ndarray, confidence: np.ndarray, grid: PatchGrid,
                    class_names: Sequence[str], colours: np.ndarray, tags: dict[str, str] | None = None) -> None:
    """One patch's prediction as a two-band uint8 COG on ``grid`` (see the module docstring).

    Args:
        path: the COG to write (replaced through a temporary sibling; folders are created).
        classes: model class per pixel, ``(grid.height, grid.width)``.
        confidence: band 2, already encoded (:func:`confidence_uint8`), same shape.
        grid: the patch's grid (:func:`cropseg.s4a.grid.read_patch_grid`).
        class_names: name of each model class, background first.
        colours: RGB(A) in 0..1, one row per class (:func:`colour_table`).
        tags: extra dataset metadata (model, label set, ...).

    Raises:
        ValueError: ``classes`` or ``confidence`` does not have the grid's shape.
    """
    if classes.shape != (grid.height, grid.width) or confidence.shape != classes.shape:
        raise ValueError(f"{path}: prediction {classes.shape} / confidence {confidence.shape} do not match the "
                         f"patch grid {grid.height}x{grid.width}")
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 2, "dtype": "uint8",
               "crs": grid.crs, "transform": grid.transform, "nodata": NODATA}
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(classes.astype(np.uint8), 1)
            dataset.write(confidence.astype(np.uint8), 2)
            dataset.write_colormap(1, colour_table(colours))
            dataset.set_band_description(1, "class")
            dataset.set_band_description(2, "confidence (255 * max probability)")
            dataset.update_tags(CLASS_NAMES=",".join(class_names), **(tags or {}))
            dataset.update_tags(1, **{f"CLASS_{k}": name for k, name in enumerate(class_names)})
            dataset.update_tags(2, SCALE="1/255", MEANING="max class probability")
        with memory.open() as source:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                rasterio.shutil.copy(source, tmp, driver="COG", compress="DEFLATE", blocksize=BLOCK,
                                     overview_resampling="NEAREST")
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)


def _mosaic_grid(grids: Sequence[PatchGrid]) -> tuple[float, float, float, float, int, int]:
    """(left, top, x resolution, y resolution, width, height) of the union of same-CRS, same-resolution grids."""
    first = grids[0]
    for grid in grids[1:]:
        if grid.crs != first.crs or (grid.transform.a, grid.transform.e) != (first.transform.a, first.transform.e):
            raise ValueError(f"patches of one mosaic differ in CRS or resolution: {first.crs} "
                             f"{first.transform.a, first.transform.e} vs {grid.crs} {grid.transform.a, grid.transform.e}")
    left = min(g.bounds[0] for g in grids)
    top = max(g.bounds[3] for g in grids)
    right = max(g.bounds[2] for g in grids)
    bottom = min(g.bounds[1] for g in grids)
    xres, yres = first.transform.a, first.transform.e
    return left, top, xres, yres, int(round((right - left) / xres)), int(round((bottom - top) / yres))


def write_vrt(path: Path, sources: Sequence[tuple[str, PatchGrid]], class_names: Sequence[str],
              colours: np.ndarray) -> None:
    """A GDAL VRT mosaic of patch COGs (``sources``: path relative to the VRT, grid).

    Args:
        path: the ``.vrt`` file, written atomically.
        sources: ``(path relative to the VRT, grid)`` of each patch COG.
        class_names: name of each model class, background first.
        colours: RGB(A) in 0..1, one row per class.

    Raises:
        ValueError: the patches differ in CRS or resolution (one mosaic is one tile's grid).
    """
    grids = [grid for _, grid in sources]
    left, top, xres, yres, width, height = _mosaic_grid(grids)
    palette = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
                      for _, (r, g, b, a) in sorted(colour_table(colours).items()))
    categories = "".join(f"<Category>{escape(name)}</Category>" for name in class_names)
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f"  <SRS dataAxisToSRSAxisMapping=\"1,2\">{escape(grids[0].crs.to_wkt())}</SRS>",
             f"  <GeoTransform>{left!r}, {xres!r}, 0.0, {top!r}, 0.0, {yres!r}</GeoTransform>",
             f'  <Metadata><MDI key="CLASS_NAMES">{escape(",".join(class_names))}</MDI></Metadata>']
    for band, description in ((1, "class"), (2, "confidence (255 * max probability)")):
        lines.append(f'  <VRTRasterBand dataType="Byte" band="{band}">')
        lines.append(f"    <Description>{escape(description)}</Description>")
        lines.append(f"    <NoDataValue>{NODATA}</NoDataValue>")
        if band == 1:
            lines += ["    <ColorInterp>Palette</ColorInterp>", f"    <CategoryNames>{categories}</CategoryNames>",
                      f"    <ColorTable>{palette}</ColorTable>"]
        for relpath, grid in sources:
            x_off = int(round((grid.bounds[0] - left) / xres))
            y_off = int(round((grid.bounds[3] - top) / yres))
            lines += ["    <SimpleSource>",
                      f"      <SourceFilename relativeToVRT=\"1\">{escape(relpath)}</SourceFilename>",
                      f"      <SourceBand>{band}</SourceBand>",
                      f'      <SourceProperties RasterXSize="{grid.width}" RasterYSize="{grid.height}" '
                      f'DataType="Byte" BlockXSize="{BLOCK}" BlockYSize="{BLOCK}"/>',
                      f'      <SrcRect xOff="0" yOff="0" xSize="{grid.width}" ySize="{grid.height}"/>',
                      f'      <DstRect xOff="{x_off}" yOff="{y_off}" xSize="{grid.width}" ySize="{grid.height}"/>',
                      "    </SimpleSource>"]
        lines.append("  </VRTRasterBand>")
    lines.append("</VRTDataset>")
    with atomic_file(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def qgis_style(class_names: Sequence[str], colours: np.ndarray) -> str:
    """A QGIS raster style (.qml): band 1 as a paletted layer with the class names; background transparent."""
    entries = "\n".join(
        f'        <paletteEntry value="{k}" color="#{r:02x}{g:02x}{b:02x}" alpha="255" label={quoteattr(name)}/>'
        for k, (name, (r, g, b)) in enumerate(zip(class_names, _rgb255(colours))) if k != NODATA)
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28.0" styleCategories="AllStyleCategories">\n'
            "  <pipe>\n"
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
            "      <rasterTransparency/>\n"
            "      <colorPalette>\n"
            f"{entries}\n"
            "      </colorPalette>\n"
            "    </rasterrenderer>\n"
            '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
            '    <rasterresampler maxOversampling="2"/>\n'
            "  </pipe>\n"
            "  <blendMode>0</blendMode>\n"
            "</qgis>\n")


def legend_csv(class_names: Sequence[str], colours: np.ndarray) -> str:
    """value,name,colour,red,green,blue: one row per class (0 = background / no data)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["value", "name", "colour", "red", "green", "blue"])
    for k, (name, (r, g, b)) in enumerate(zip(class_names, _rgb255(colours))):
        writer.writerow([k, name, f"#{r:02x}{g:02x}{b:02x}", r, g, b])
    return out.getvalue()


def write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(text)
