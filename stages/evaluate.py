"""DVC stage evaluate: the trained model on the test split -> metrics/evaluate/.

    python stages/evaluate.py            # models/model.pt on data/split/test.txt

Each test patch is predicted whole (the predict stage's path). Writes metrics.json (DVC metrics;
`parcels`: parcel-level accuracy and F1 where the S4A files carry parcels, and the count of suspect declarations at params `predict.suspect_threshold`), per_class.csv, confusion.csv / confusion_matrix.csv,
patch_scores.csv, confusion.png, per_class_f1.png, previews.png and report.md; the folder is
replaced atomically. Device, precision and batch size follow params `train.device` /
`train.precision` / `train.physical_batch_size`, the loader workers `loader.workers`; months and
normalisation come from the model file.
"""

import argparse
import sys
from pathlib import Path

from cropseg.evaluate.stage import EvaluatePaths, evaluate
from cropseg.core.params import load_params
from cropseg.core.stage_cli import run_stage
from cropseg.tracking.scoring_runs import track_evaluate

DEFAULTS = EvaluatePaths()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default=str(DEFAULTS.model), help="model file (default: %(default)s)")
    parser.add_argument("--medians", default=str(DEFAULTS.medians), help="medians store (default: %(default)s)")
    parser.add_argument("--split", default=str(DEFAULTS.split), help="split list to evaluate (default: %(default)s)")
    parser.add_argument("--patches", default=str(DEFAULTS.patches), help="per-patch table (default: %(default)s)")
    parser.add_argument("--clean", default=str(DEFAULTS.clean),
                        help="synthetic clean label maps, used when present (default: %(default)s)")
    parser.add_argument("--snapshots", default=str(DEFAULTS.snapshots),
                        help="train stage snapshots scored into curve.csv, when any (default: %(default)s)")
    parser.add_argument("--holdout-model", default=str(DEFAULTS.holdout_model),
                        help="irreducible-loss model, scored on the same labels when present (default: %(default)s)")
    parser.add_argument("--netcdf", default="data/netcdf",
                        help="S4A root: parcel rasters for parcel-level scores, where present (default: %(default)s)")
    parser.add_argument("--out", default=str(DEFAULTS.out), help="output folder (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, help="sub-patches per forward pass (default: params "
                                                       "train.physical_batch_size; results depend on it only "
                                                       "with model.norm: batch)")
    parser.add_argument("--previews", type=int, default=4, help="test patches drawn in previews.png (default: 4)")
    args = parser.parse_args()

    def body():
        params = load_params(args.params)
        paths = EvaluatePaths(model=Path(args.model), medians=Path(args.medians), split=Path(args.split),
                              patches=Path(args.patches), clean=Path(args.clean), out=Path(args.out),
                              snapshots=Path(args.snapshots), holdout_model=Path(args.holdout_model),
                              netcdf=Path(args.netcdf) if args.netcdf else None)
        result = evaluate(paths,
                          label_set_name=params.labels, device=params.train.device,
                          precision=params.train.precision,
                          batch_size=args.batch_size or params.train.physical_batch_size,
                          workers=params.loader.workers, previews=args.previews,
                          cpu_threads=params.train.cpu_threads,
                          suspect_threshold=params.predict.suspect_threshold)
        track_evaluate(params, paths, result)
        return result

    return run_stage("evaluate", body, errors=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
