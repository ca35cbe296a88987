"""The parcel raster of an S4A patch: the ``parcels`` group's ``(y, x)`` uint32 ids (0 = no parcel).

A new season's files carry no ``parcels`` (nor ``labels``) group: :func:`read_parcels` then
returns ``None`` and the maps of such a patch have no parcel rows.
"""

from __future__ import annotations

from pathlib import Path

import netCDF4
import numpy as np

GROUP = "parcels"


class ParcelsError(ValueError):
    """A ``parcels`` group that is there but cannot be read as a parcel raster."""


def read_parcels(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """The parcel ids of ``path`` as ``(H, W)`` uint32, or ``None`` when the file has no ``parcels`` group.

    Args:
        path: an S4A netCDF patch.
        shape: the expected ``(H, W)`` (the patch's 10 m grid); not checked when ``None``.

    Raises:
        ParcelsError: the group has no ``parcels`` variable, or its shape is not ``shape``.
    """
    with netCDF4.Dataset(path) as dataset:
        group = dataset.groups.get(GROUP)
        if group is None:
            return None
        if GROUP not in group.variables:
            raise ParcelsError(f"{path}: group 'parcels' has no variable 'parcels' (expected uint32 (y, x) ids)")
        variable = group.variables[GROUP]
        variable.set_auto_mask(False)
        ids = np.asarray(variable[:]).astype(np.uint32)
    if shape is not None and ids.shape != tuple(shape):
        raise ParcelsError(f"{path}: parcels raster {ids.shape}, expected the patch's {tuple(shape)} 10 m grid")
    return ids
