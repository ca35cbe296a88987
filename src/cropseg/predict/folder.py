"""Crop maps of any S4A folder, outside the pipeline: ``python -m cropseg.predict.folder``.

    python -m cropseg.predict.folder --patches /data/S4A/2020 --out /tmp/maps   # layout YYYY/TILE/ or flat

The folder goes through the pipeline's own ``fetch_s4a`` (source ``local``: every file validated,
linked not copied) and ``medians`` (params ``medians``) into a temporary folder, then through
:func:`cropseg.predict.stage.predict_patches` as the predict stage's split list does. It is its own
command, not an option of ``stages/predict.py``, because it needs the fetch and medians code: as an
option, every change to those would rerun the predict stage, whose DVC path never runs them.
Device and precision follow params ``train.device``, ``train.precision`` (as the predict and
evaluate stages). Files without ``labels`` and ``parcels`` (a season not yet declared) are mapped
too; their patches have no parcel rows.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.params import Params


def folder_patches(folder: Path, work: Path, params: Params) -> tuple[Path, Path, list[str]]:
    """Fetch and compute the medians of an S4A folder under ``work``, as the pipeline's stages do.

    Args:
        folder: an S4A folder (``YYYY/TILE/`` or flat), any years and tiles.
        work: an empty folder for the fetched patches (``netcdf``) and the medians store (``medians``).
        params: the pipeline's params (:class:`cropseg.core.params.Params`); ``medians`` is used.

    Returns:
        The fetched S4A root, the medians store and the patch paths under the root.

    Raises:
        FileNotFoundError: ``folder`` holds no S4A patch file.
    """
    from ..core.params import Data, LocalData
    from ..fetch.stage import fetch_s4a
    from ..medians.stage import run_medians
    from ..s4a.netcdf import find_patches, parse_patch_name

    names = [parse_patch_name(p.name) for p in find_patches(folder)]
    if not names:
        raise FileNotFoundError(f"{folder}: no S4A patch files (YYYY_TILE_patch_XX_YY.nc)")
    data = Data(source="local", local=LocalData(path=str(folder)), years=sorted({n.year for n in names}),
                tiles=sorted({n.tile for n in names}))
    fetch_s4a(data, work / "netcdf", labels_required=False)  # a new season: no labels/parcels yet
    run_medians(work / "netcdf", work / "medians", params.medians)
    listed = sorted(p.relative_to(work / "netcdf").as_posix() for p in find_patches(work / "netcdf"))
    return work / "netcdf", work / "medians", listed


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, predict the folder; the exit status (errors as the stages report them).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 1 after a domain error (:func:`cropseg.core.stage_cli.run_stage`).
    """
    parser = argparse.ArgumentParser(prog="python -m cropseg.predict.folder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=Path, required=True, help="an S4A folder (any layout)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/model.pt", help="model file (default: %(default)s)")
    # no defaults into the DVC stage's outputs: a map of another folder must not overwrite data/predictions
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    parser.add_argument("--preview", default="", help="PNG of a tile-year mosaic beside its labels (default: none)")
    parser.add_argument("--metrics", default="", help="seam measurement and parcel scores, JSON (default: none)")
    args = parser.parse_args(argv)

    from ..core.params import load_params
    from ..core.stage_cli import run_stage
    from .stage import predict_with_params

    def body():
        params = load_params(args.params)
        with tempfile.TemporaryDirectory(prefix="predict-") as work:
            netcdf, medians, patch_list = folder_patches(args.patches, Path(work), params)
            return predict_with_params(params, model_path=Path(args.model), medians=medians, netcdf=netcdf,
                                       patch_list=patch_list, out=Path(args.out),
                                       preview=Path(args.preview) if args.preview else None,
                                       metrics=Path(args.metrics) if args.metrics else None)

    return run_stage("predict", body, errors=(FileNotFoundError,))


if __name__ == "__main__":
    import sys

    sys.exit(main())
