"""DVC stage fetch_s4a: S4A patches from the configured source into data/netcdf/ (validated, indexed)."""

import argparse
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (section 'data')")
    parser.add_argument("--out", default="data/netcdf", help="output folder, replaced atomically")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, max 8)")
    args = parser.parse_args()
    # imported after parsing, so `--help` stays instant (no netCDF, SciPy or Hugging Face imports)
    from cropseg.fetch.stage import fetch_s4a
    from cropseg.core.params import load_params
    from cropseg.core.stage_cli import run_stage

    # a FetchError's message already ends with the restore hint; run_stage adds it to the others
    return run_stage("fetch_s4a", lambda: fetch_s4a(load_params(args.params).data, args.out, args.workers),
                     restore=args.out)


if __name__ == "__main__":
    sys.exit(main())
