"""What the stages' pictures share: headless pyplot and the class colours.

The evaluate stage's figures and the predict stage's mosaic draw the classes in the same colours
(the crop maps' colour table and QGIS style use them too), so the palette is defined once, here,
without making either stage depend on the other's drawing code. matplotlib is imported inside the
functions, so importing this module costs nothing.
"""

from __future__ import annotations

import numpy as np

BACKGROUND_COLOUR = "#d9d9d9"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported here, on first use: no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def class_colours(n_classes: int) -> np.ndarray:
    """The colour of every class: background light grey, then tab20's strong colours first.

    Args:
        n_classes: classes of the label set, background included.

    Returns:
        RGB floats in 0..1, shape ``(n_classes, 3)``.
    """
    import matplotlib

    tab20 = matplotlib.colormaps["tab20"].colors
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    colours = [matplotlib.colors.to_rgb(BACKGROUND_COLOUR)]
    colours += [tab20[order[(k - 1) % 20]] for k in range(1, n_classes)]
    return np.asarray(colours, dtype=float)
