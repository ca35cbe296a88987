"""The predict stage's picture: a tile-year mosaic, read back through its VRT, beside its labels.

Reading the mosaic through the VRT (rather than drawing the stitched arrays) shows what a GIS
will show: the patches on their common grid, by their relative paths. Kept apart from
:mod:`cropseg.predict.stage` so that the prediction reads without the matplotlib layout code;
matplotlib and rasterio are imported inside :func:`plot_mosaic`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_file
from ..core.plotting import pyplot

PREVIEW_MAX_SIDE = 1200  # pixels of the mosaic overview
Bounds = tuple[float, float, float, float]  # left, bottom, right, top in the mosaic's CRS


def plot_mosaic(vrt: Path, bounds: dict[str, Bounds], truth: dict[str, np.ndarray], names: tuple[str, ...],
                colours: np.ndarray, path: Path, title: str, zoomed: int = 2) -> None:
    """The mosaic read back through its VRT (nearest, at most PREVIEW_MAX_SIDE px) beside the labels,
    then up to ``zoomed`` of its patches at full resolution (also read through the VRT); ``bounds``: each
    patch's box in the mosaic's CRS (:attr:`cropseg.s4a.grid.PatchGrid.bounds`).

    Args:
        vrt: the tile-year mosaic.
        bounds: patch path -> its box, for every patch of the mosaic.
        truth: patch path -> its full-patch label map (model classes), for the same patches.
        names: the class names, background first.
        colours: RGB in 0..1, one row per class.
        path: the PNG to write (atomically; folders are created).
        title: the start of each overview panel's title.
        zoomed: how many patches (the first by path) to show at full resolution.
    """
    import rasterio
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle
    from rasterio.enums import Resampling
    from rasterio.windows import from_bounds

    shown = sorted(bounds)[:zoomed]
    with rasterio.open(vrt) as mosaic:
        step = max(1, math.ceil(max(mosaic.width, mosaic.height) / PREVIEW_MAX_SIDE))
        shape = (math.ceil(mosaic.height / step), math.ceil(mosaic.width / step))
        predicted = mosaic.read(1, out_shape=shape, resampling=Resampling.nearest)
        left, top, xres, yres = mosaic.transform.c, mosaic.transform.f, mosaic.transform.a, mosaic.transform.e
        patches = {r: mosaic.read(1, window=from_bounds(*bounds[r], transform=mosaic.transform))
                   for r in shown}
    labels = np.zeros(shape, dtype=np.uint8)
    for relpath, box in bounds.items():
        row0 = int(round((box[3] - top) / yres)) // step
        col0 = int(round((box[0] - left) / xres)) // step
        part = truth[relpath][::step, ::step]
        h, w = min(part.shape[0], shape[0] - row0), min(part.shape[1], shape[1] - col0)
        labels[row0:row0 + h, col0:col0 + w] = part[:h, :w]
    plt = pyplot()
    cmap = ListedColormap(np.vstack([[1.0, 1.0, 1.0], colours[1:]]))  # no data white, classes in their colours
    style = {"cmap": cmap, "vmin": 0, "vmax": len(names) - 1, "interpolation": "nearest"}
    km = 1000.0
    extent = (left / km, (left + xres * step * shape[1]) / km, (top + yres * step * shape[0]) / km, top / km)
    fig, axes = plt.subplots(1 + len(shown), 2, figsize=(11, 5.2 + 4.6 * len(shown)), squeeze=False,
                             constrained_layout=True)
    for ax, image, name in ((axes[0, 0], predicted, "prediction (mosaic VRT)"), (axes[0, 1], labels, "labels")):
        ax.imshow(image, extent=extent, **style)
        for box in bounds.values():  # patch footprints, so that small patches on a large tile stay visible
            x0, y0, x1, y1 = (b / km for b in box)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="black", linewidth=0.8))
        ax.set_title(f"{title}: {name}")
        ax.set_xlabel("easting (km)")
        ax.set_ylabel("northing (km)")
    for row, relpath in enumerate(shown, start=1):
        x0, y0, x1, y1 = (b / km for b in bounds[relpath])
        for col, (image, name) in enumerate(((patches[relpath], "prediction"), (truth[relpath], "labels"))):
            axes[row, col].imshow(image, extent=(x0, x1, y0, y1), **style)
            axes[row, col].set_title(f"{Path(relpath).stem}: {name}", fontsize=10)
    present = sorted((set(np.unique(predicted).tolist()) | set(np.unique(labels).tolist())) - {0})
    handles = [Patch(color=colours[k], label=names[k]) for k in present]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(6, max(1, len(handles))), frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
