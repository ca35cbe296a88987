"""DVC stage fetch_dem: elevation covering the footprints of data/netcdf/ patches into data/dem/.

Source from params section 'dem': synthetic (default, offline), copernicus (GLO-30 public tiles) or
none. Always writes data/dem/tiles.csv (name,status,path); every data/dem/*.tif is elevation in m.
"""

import argparse
import sys
import time

from cropseg.core.atomic import atomic_dir
from cropseg.fetch.dem import fetch_dem
from cropseg.core.params import load_params
from cropseg.core.stage_cli import run_stage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--netcdf", default="data/netcdf", help="fetched S4A patches with index.csv")
    parser.add_argument("--out", default="data/dem", help="output folder, replaced atomically")
    parser.add_argument("--params", default="params.yaml", help="params file (section 'dem')")
    args = parser.parse_args()
    started = time.perf_counter()

    def body():
        params = load_params(args.params)
        with atomic_dir(args.out) as tmp:
            summary = fetch_dem(args.netcdf, tmp, params.dem)
        summary.seconds = time.perf_counter() - started
        return summary

    return run_stage("fetch_dem", body, restore=args.out)


if __name__ == "__main__":
    sys.exit(main())
