"""DVC stage irreducible_loss: the holdout model's per-sample loss on every training sub-patch."""

import argparse
import sys
from pathlib import Path

from cropseg.selection.irreducible import run_irreducible
from cropseg.core.params import load_params
from cropseg.core.stage_cli import run_stage
from cropseg.tracking.scoring_runs import track_irreducible


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/holdout.pt", help="the holdout (irreducible-loss) model")
    parser.add_argument("--medians", default="data/medians")
    parser.add_argument("--split", default="data/split", help="folder whose train.txt lists the training patches")
    parser.add_argument("--out", default="data/irreducible_loss", help="output folder, replaced atomically")
    args = parser.parse_args()

    def body():
        params = load_params(args.params)
        paths = dict(holdout_model=Path(args.model), medians=Path(args.medians), split_dir=Path(args.split),
                     out=Path(args.out))
        summary = run_irreducible(params, **paths)
        track_irreducible(params, **paths, summary=summary)
        return summary

    return run_stage("irreducible_loss", body, errors=(FileNotFoundError, ValueError))  # ValueError: parcel noise


if __name__ == "__main__":
    sys.exit(main())
