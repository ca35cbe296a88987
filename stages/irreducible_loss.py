"""DVC stage irreducible_loss: the holdout model's per-sample loss on every training sub-patch."""

import argparse
import sys
from pathlib import Path

from cropseg.irreducible import run_irreducible
from cropseg.params import ParamsError, load_params
from cropseg.stage_runs import track_irreducible


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/holdout.pt", help="the holdout (irreducible-loss) model")
    parser.add_argument("--medians", default="data/medians")
    parser.add_argument("--split", default="data/split", help="folder whose train.txt lists the training patches")
    parser.add_argument("--out", default="data/irreducible_loss", help="output folder, replaced atomically")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
    except ParamsError as error:
        print(f"irreducible_loss: error: {error}", file=sys.stderr)
        return 1
    paths = dict(holdout_model=Path(args.model), medians=Path(args.medians), split_dir=Path(args.split),
                 out=Path(args.out))
    summary = run_irreducible(params, **paths)
    track_irreducible(params, **paths, summary=summary)
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
