"""DVC stage split: train/val/test patch lists, per-patch table and holdout split into data/split/."""

import argparse
import sys

from cropseg.split.labels import load_label_set
from cropseg.core.params import load_params
from cropseg.split.stage import run_split
from cropseg.core.stage_cli import run_stage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (section 'split')")
    parser.add_argument("--netcdf", default="data/netcdf", help="S4A patches with index.csv")
    parser.add_argument("--dem", default="data/dem", help="elevation GeoTIFFs (*.tif); absent or empty: no elevation")
    parser.add_argument("--rules-dir", default="configs/split_rules", help="folder of the split.rules presets")
    parser.add_argument("--labels-dir", default="configs/labels", help="folder of the label sets (params.labels)")
    parser.add_argument("--out", default="data/split", help="output folder, replaced atomically")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: split.workers, else CPUs, max 8)")
    args = parser.parse_args()

    def body():
        params = load_params(args.params)
        label_set = load_label_set(params.labels, args.labels_dir)
        return run_split(params.split, args.netcdf, args.dem, args.out, args.rules_dir, args.workers,
                         label_set=label_set)

    return run_stage("split", body)


if __name__ == "__main__":
    sys.exit(main())
