"""DVC stage medians: per-period band medians of every patch, cut into sub-patches, into data/medians/."""

import argparse
import sys

from cropseg.medians.stage import run_medians
from cropseg.core.params import load_params
from cropseg.core.stage_cli import run_stage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--netcdf", default="data/netcdf", help="S4A folder with index.csv (fetch_s4a output)")
    parser.add_argument("--out", default="data/medians", help="output folder, replaced atomically")
    parser.add_argument("--params", default="params.yaml", help="params file (section 'medians')")
    parser.add_argument("--workers", type=int, default=None, help="override medians.workers")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()

    def body():
        params = load_params(args.params).medians
        if args.workers is not None:
            params = params.model_copy(update={"workers": max(1, args.workers)})
        return run_medians(args.netcdf, args.out, params, progress=not args.no_progress)

    return run_stage("medians", body)


if __name__ == "__main__":
    sys.exit(main())
