"""DVC stages train_holdout and train: one training code path, two params sections.

    python stages/train.py holdout   # the RHO-Loss irreducible-loss model, trained on data/split/holdout/
    python stages/train.py train     # the target model, trained with the configured selection method
"""

import argparse
import sys
from pathlib import Path

from cropseg.core.params import load_params
from cropseg.core.stage_cli import run_stage
from cropseg.selection.method import check_method
from cropseg.train.loop import RunPaths, train

DEFAULTS = {
    "holdout": dict(split="data/split/holdout", model="models/holdout.pt", metrics="metrics/holdout"),
    "train": dict(split="data/split", model="models/model.pt", metrics="metrics/train", snapshots="models/snapshots"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=sorted(DEFAULTS), help="which run: params section and default paths")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--medians", default="data/medians")
    parser.add_argument("--split", help="folder with train.txt / val.txt (default per stage)")
    parser.add_argument("--model", help="model file to write (default per stage)")
    parser.add_argument("--metrics", help="DVCLive folder (default per stage)")
    parser.add_argument("--checkpoints", default=".cache/checkpoints", help="resume checkpoints, outside DVC outputs")
    parser.add_argument("--irreducible", default="data/irreducible_loss", help="stored holdout losses (train only)")
    parser.add_argument("--snapshots", help="model snapshots at protocol.test_points (train only; default "
                                            "models/snapshots)")
    parser.add_argument("--truth", default="data/netcdf/truth/truth.csv", help="synthetic truth table, if any")
    args = parser.parse_args()
    defaults = DEFAULTS[args.stage]

    def body() -> str:
        params = load_params(args.params)
        check_method(params.selection.method, args.params)  # the grammar params.yaml's schema leaves to us
        paths = RunPaths(split_dir=Path(args.split or defaults["split"]),
                         model_out=Path(args.model or defaults["model"]),
                         metrics_dir=Path(args.metrics or defaults["metrics"]),
                         checkpoint_dir=Path(args.checkpoints) / args.stage, medians=Path(args.medians),
                         irreducible=Path(args.irreducible) if args.stage == "train" else None,
                         truth=Path(args.truth),
                         snapshots=Path(args.snapshots or defaults["snapshots"]) if args.stage == "train" else None)
        return train(params, args.stage, paths).line(args.stage)

    # ValueError: a split or config the run refuses (cropseg.split.guards, cropseg.train.loop), named in the message
    return run_stage(args.stage, body, errors=(ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
