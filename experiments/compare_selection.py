"""The RHO-Loss experiment: uniform, random, loss, margin and rho_loss at equal samples seen,
on synthetic S4A with noisy labels. Runs the pipeline's own stage functions end to end.

    python experiments/compare_selection.py                       # defaults below, ~10 min on 2 cores
    python experiments/compare_selection.py --label-noise 0.3 --patches 32 --epochs 12

Data and intermediate files go to --work (git-ignored); the comparison (per-method curves as
CSV for `dvc plots show metrics/compare/*.csv`, summary.json, comparison.png) to --out.
Every run starts from the same seed and the same data; only `selection.method` (and the epochs
that make samples seen equal) differ. The equivalent DVC grid is in the README.
"""

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from cropseg.compare import MethodResult, read_curve, read_noise_shares, write_outputs
from cropseg.dem import fetch_dem
from cropseg.fetch import fetch_s4a
from cropseg.irreducible import run_irreducible
from cropseg.medians import run_medians
from cropseg.params import parse_params
from cropseg.split import run_split
from cropseg.train import RunPaths, train

METHODS = ("uniform", "random", "loss", "margin", "rho_loss")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="base params (model, loader, loss, train...)")
    parser.add_argument("--patches", type=int, default=24)
    parser.add_argument("--label-noise", type=float, default=0.2)
    parser.add_argument("--label-noise-unit", default="parcel", choices=["parcel", "window"])
    parser.add_argument("--epochs", type=int, default=10, help="uniform's epochs; block-b methods get b x epochs")
    parser.add_argument("--block-size", type=int, default=2)
    parser.add_argument("--holdout-epochs", type=int, help="override holdout.epochs (the IL model should converge)")
    parser.add_argument("--holdout-lr", type=float, help="override holdout.lr")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--work", type=Path, default=Path(".cache/compare"))
    parser.add_argument("--out", type=Path, default=Path("metrics/compare"))
    args = parser.parse_args()

    raw = yaml.safe_load(Path(args.params).read_text())
    raw["data"] = {**raw.get("data", {}), "source": "synthetic"}
    raw["data"]["synthetic"] = {**raw["data"].get("synthetic", {}), "patches": args.patches,
                                "label_noise": args.label_noise,
                                "label_noise_unit": args.label_noise_unit}
    raw["tracking"] = {**raw.get("tracking", {}), "wandb": "disabled"}
    raw["holdout"] = {**raw.get("holdout", {})}
    if args.holdout_epochs:
        raw["holdout"]["epochs"] = args.holdout_epochs
    if args.holdout_lr:
        raw["holdout"]["lr"] = args.holdout_lr
    params = parse_params(raw, args.params)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    data_key = json.dumps({"data": params.data.model_dump(), "medians": params.medians.model_dump(),
                           "split": params.split.model_dump()}, sort_keys=True)
    if not (work / "data.json").exists() or (work / "data.json").read_text() != data_key:
        fetch_s4a(params.data, work / "netcdf")
        (work / "dem").mkdir(exist_ok=True)
        fetch_dem(work / "netcdf", work / "dem", params.dem)
        run_medians(work / "netcdf", work / "medians", params.medians)
        run_split(params.split, work / "netcdf", work / "dem", work / "split")
        (work / "data.json").write_text(data_key)

    def paths(name: str, split: Path) -> RunPaths:
        return RunPaths(split_dir=split, model_out=work / "models" / f"{name}.pt", metrics_dir=work / "metrics" / name,
                        checkpoint_dir=work / "checkpoints" / name, medians=work / "medians",
                        irreducible=work / "irreducible_loss", truth=work / "netcdf" / "truth" / "truth.csv",
                        lock=work / "no.lock")

    holdout = train(params, "holdout", paths("holdout", work / "split" / "holdout"))
    print(holdout.line("holdout"))
    print(run_irreducible(params, holdout_model=work / "models" / "holdout.pt", medians=work / "medians",
                          split_dir=work / "split", out=work / "irreducible_loss").line())
    results = []
    for method in args.methods:
        block = 1 if method == "uniform" else args.block_size
        # validate (and let ReduceLROnPlateau count patience) at equal samples seen, not per epoch considered
        run = params.train.model_copy(update={"epochs": args.epochs * block, "val_every": block})
        selection = params.selection.model_copy(update={"method": method, "block_size": block})
        method_params = params.model_copy(update={"train": run, "selection": selection})
        result = train(method_params, "train", paths(method, work / "split"))
        print(f"{method}: {result.line('train')}")
        selected, considered = read_noise_shares(work / "metrics" / method / "steps.csv")
        results.append(MethodResult(method, block, read_curve(work / "metrics" / method / "val.csv"), selected,
                                    considered))
    if args.out.exists():
        shutil.rmtree(args.out)
    summary = write_outputs(results, args.out)
    print(json.dumps(summary, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
