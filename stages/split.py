"""DVC stage split: train/val/test patch lists, per-patch table and holdout split into data/split/."""

import argparse
import sys

from cropseg.labels import LabelSetError, load_label_set
from cropseg.params import ParamsError, load_params
from cropseg.patch_table import PatchTableError
from cropseg.split import SplitError, run_split
from cropseg.split_rules import RuleError


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
    try:
        params = load_params(args.params)
        label_set = load_label_set(params.labels, args.labels_dir)
        summary = run_split(params.split, args.netcdf, args.dem, args.out, args.rules_dir, args.workers,
                            label_set=label_set)
    except (ParamsError, SplitError, RuleError, PatchTableError, LabelSetError) as error:
        print(f"split: error: {error}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
