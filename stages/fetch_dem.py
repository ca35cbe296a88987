"""DVC stage fetch_dem: elevation covering the footprints of data/netcdf/ patches into data/dem/.

Source from params section 'dem': synthetic (default, offline), copernicus (GLO-30 public tiles) or
none. Always writes data/dem/tiles.csv (name,status,path); every data/dem/*.tif is elevation in m.
"""

import argparse
import sys
import time

from cropseg.atomic import atomic_dir, restore_hint
from cropseg.dem import DemError, fetch_dem
from cropseg.params import ParamsError, load_params


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--netcdf", default="data/netcdf", help="fetched S4A patches with index.csv")
    parser.add_argument("--out", default="data/dem", help="output folder, replaced atomically")
    parser.add_argument("--params", default="params.yaml", help="params file (section 'dem')")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        params = load_params(args.params)
        with atomic_dir(args.out) as tmp:
            summary = fetch_dem(args.netcdf, tmp, params.dem)
    except (ParamsError, DemError) as error:
        print(f"fetch_dem: error: {error}\n{restore_hint(args.out)}", file=sys.stderr)
        return 1
    summary.seconds = time.perf_counter() - started
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
