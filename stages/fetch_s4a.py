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
    from cropseg.atomic import restore_hint
    from cropseg.fetch import FetchError, fetch_s4a
    from cropseg.params import ParamsError, load_params

    try:
        params = load_params(args.params)
        summary = fetch_s4a(params.data, args.out, args.workers)
    except FetchError as error:  # its message ends with how to restore the previous output
        print(f"fetch_s4a: error: {error}", file=sys.stderr)
        return 1
    except ParamsError as error:
        print(f"fetch_s4a: error: {error}\n{restore_hint(args.out)}", file=sys.stderr)
        return 1
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
