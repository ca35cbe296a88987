"""DVC stage predict: crop maps (COGs, VRT mosaics, parcel GeoPackages, QGIS project) -> data/predictions/.

    python stages/predict.py                              # models/model.pt on data/split/test.txt
    python stages/predict.py --split data/split/val.txt   # another split list (paths under --netcdf)
    python -m cropseg.predict.folder --patches /data/S4A/2020 --out /tmp/maps   # any S4A folder: validated,
                                                          # medians computed with params `medians`

Band 1 of every patch GeoTIFF is the predicted class (colour table, class names; 0 = no data),
band 2 the confidence (255 * max probability); each patch is predicted whole (no sub-patch grid).
Where the S4A files carry parcels: parcels/YYYY_TILE.gpkg (+ .csv) with declared and predicted
class, confidence and the `suspect` flag (params `predict.suspect_threshold`); cropseg.qgs opens
everything in QGIS. Device and precision follow params `train.device`, `train.precision`.
"""

import argparse
import sys
from pathlib import Path

FOLDER_COMMAND = "python -m cropseg.predict.folder --patches DIR --out DIR"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/model.pt", help="model file (default: %(default)s)")
    parser.add_argument("--medians", default="data/medians", help="medians store (default: %(default)s)")
    parser.add_argument("--netcdf", default="data/netcdf", help="S4A root the split paths are under "
                                                                "(default: %(default)s)")
    parser.add_argument("--split", default="data/split/test.txt", help="split list (default: %(default)s)")
    parser.add_argument("--patches", help=argparse.SUPPRESS)  # moved to cropseg.predict.folder: a clear error
    parser.add_argument("--out", default="data/predictions", help="output folder (default: %(default)s)")
    parser.add_argument("--preview", default="metrics/predict/mosaic.png",
                        help="PNG of a tile-year mosaic beside its labels (default: %(default)s; '' for none)")
    parser.add_argument("--metrics", default="metrics/predict/metrics.json",
                        help="seam measurement and parcel scores, JSON (default: %(default)s; '' for none)")
    args = parser.parse_args()
    if args.patches is not None:
        parser.error(f"--patches is no longer an option of this stage: an S4A folder is predicted by "
                     f"`{FOLDER_COMMAND}` (same options, without --split/--netcdf/--medians)")

    from cropseg.core.params import load_params
    from cropseg.core.stage_cli import run_stage
    from cropseg.nn.dataset import read_split_list
    from cropseg.predict.stage import predict_with_params

    def body():
        return predict_with_params(load_params(args.params), model_path=Path(args.model), medians=Path(args.medians),
                                   netcdf=Path(args.netcdf), patch_list=read_split_list(args.split),
                                   out=Path(args.out), preview=Path(args.preview) if args.preview else None,
                                   metrics=Path(args.metrics) if args.metrics else None)

    return run_stage("predict", body, errors=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
