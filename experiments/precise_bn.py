"""BatchNorm measurement: precise BN (population statistics, recomputed before each validation)
against batch statistics, over seeds, with the pipeline's own stage functions.

    OMP_NUM_THREADS=1 python experiments/precise_bn.py   # the README table, ~35 min on 2 shared cores
    python experiments/precise_bn.py --seeds 0 --epochs 2 --holdout-epochs 2   # a smoke run

A reduced setting of the default pipeline, small enough for a shared 2-core machine: the data of
the first one-seed check (8 synthetic patches on 2 tiles x 2 years, ``random_80_10_10``: 6
train / 1 val / 1 test patches), a U-Net of width 8 instead of 16, uniform for ``--epochs`` (15)
epochs and rho_loss (block 2) for twice as many (equal samples seen), the holdout model for 20
epochs. Per seed (``train.seed``; data and split fixed):

* ``batch``: ``model.norm: batch`` (eval mode normalises with each batch's own statistics);
* ``precise``: ``model.norm: precise``, selection scored with batch statistics
  (``selection.scoring_norm: batch``, the default);
* ``precise/pop``: precise BN, selection scored with the population statistics (rho_loss only).

Per run: best val weighted F1, mean of the last 5 validations, mean absolute change between
consecutive validations, and test weighted F1 of the best checkpoint (the evaluate stage's
function, batch size 16). Results: --out/precise_bn.csv and a Markdown table on stdout.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from cropseg.fetch.dem import fetch_dem
from cropseg.evaluate.stage import EvaluatePaths, evaluate
from cropseg.fetch.stage import fetch_s4a
from cropseg.selection.irreducible import run_irreducible
from cropseg.medians.stage import run_medians
from cropseg.core.params import parse_params
from cropseg.split.stage import run_split
from cropseg.train.loop import RunPaths, train

VARIANTS = {"batch": ("batch", "batch"), "precise": ("precise", "batch"), "precise/pop": ("precise", "population")}


def stability(history: list[dict]) -> tuple[float, float, float]:
    f1 = np.array([h["weighted_f1"] for h in history])
    return float(f1.max()), float(f1[-5:].mean()), float(np.abs(np.diff(f1)).mean()) if len(f1) > 1 else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--patches", type=int, default=8)
    parser.add_argument("--rules", default="random_80_10_10", help="split preset")
    parser.add_argument("--epochs", type=int, default=15, help="uniform's epochs; rho_loss gets twice as many")
    parser.add_argument("--holdout-epochs", type=int, default=20)
    parser.add_argument("--holdout-val-every", type=int, default=5, help="validate the holdout model every N epochs")
    parser.add_argument("--width", type=int, default=8, help="U-Net width (the default pipeline's is 16)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path(".cache/precise_bn"))
    parser.add_argument("--out", type=Path, default=Path("experiments/results"), help="precise_bn.csv goes here")
    args = parser.parse_args()

    raw = yaml.safe_load(Path(args.params).read_text())
    raw["data"]["source"] = "synthetic"
    raw["data"]["synthetic"]["patches"] = args.patches
    raw["split"]["rules"] = args.rules
    raw["tracking"]["wandb"] = "disabled"
    raw["holdout"]["epochs"] = args.holdout_epochs
    raw["holdout"]["val_every"] = args.holdout_val_every
    raw["data"]["tiles"] = ["31TCG", "31TCJ"]  # the data of the first one-seed check: 8 patches, 6/1/1
    raw["model"]["width"] = args.width
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    base = parse_params(raw, args.params)
    data_key = json.dumps({"data": base.data.model_dump(), "medians": base.medians.model_dump(),
                           "split": base.split.model_dump()}, sort_keys=True)
    if not (work / "data.json").exists() or (work / "data.json").read_text() != data_key:
        fetch_s4a(base.data, work / "netcdf")
        (work / "dem").mkdir(exist_ok=True)
        fetch_dem(work / "netcdf", work / "dem", base.dem)
        run_medians(work / "netcdf", work / "medians", base.medians)
        run_split(base.split, work / "netcdf", work / "dem", work / "split")
        (work / "data.json").write_text(data_key)

    def paths(name: str, split: Path, norm: str) -> RunPaths:
        return RunPaths(split_dir=split, model_out=work / "models" / f"{name}.pt", metrics_dir=work / "metrics" / name,
                        checkpoint_dir=work / "checkpoints" / name, medians=work / "medians",
                        irreducible=work / f"irreducible_{norm}")

    rows = []
    for norm in ("batch", "precise"):  # one irreducible-loss model per normalisation
        params = parse_params({**raw, "model": {**raw["model"], "norm": norm}})
        result = train(params, "holdout", paths(f"holdout_{norm}", work / "split" / "holdout", norm))
        print(result.line(f"holdout ({norm})"), flush=True)
        print(run_irreducible(params, holdout_model=work / "models" / f"holdout_{norm}.pt", medians=work / "medians",
                              split_dir=work / "split", out=work / f"irreducible_{norm}").line(), flush=True)
    for seed in args.seeds:
        for method, epochs in (("uniform", args.epochs), ("rho_loss", 2 * args.epochs)):
            for variant, (norm, scoring) in VARIANTS.items():
                if method == "uniform" and variant == "precise/pop":
                    continue  # no scoring: identical to precise
                run_raw = {**raw, "model": {**raw["model"], "norm": norm},
                           "train": {**raw["train"], "seed": seed, "epochs": epochs},
                           "selection": {**raw["selection"], "method": method, "block_size": 2,
                                         "scoring_norm": scoring}}
                params = parse_params(run_raw)
                name = f"{method}_{variant.replace('/', '_')}_s{seed}"
                result = train(params, "train", paths(name, work / "split", norm), progress=False)
                print(result.line(name), flush=True)
                test = evaluate(EvaluatePaths(model=work / "models" / f"{name}.pt", medians=work / "medians",
                                              split=work / "split" / "test.txt", patches=work / "split" / "patches.csv",
                                              clean=work / "netcdf" / "truth" / "clean_labels",
                                              out=work / "evaluate" / name, snapshots=None, holdout_model=None),
                                batch_size=16, progress=False)
                best, last5, change = stability(result.history)
                rows.append({"method": method, "norm": variant, "seed": seed, "best_val_wf1": best,
                             "last5_val_wf1": last5, "mean_abs_change": change,
                             "test_wf1": test.metrics["test"]["weighted_f1"], "seconds": result.seconds})
                args.out.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows).to_csv(args.out / "precise_bn.csv", index=False)
    frame = pd.DataFrame(rows)
    cols = ["best_val_wf1", "last5_val_wf1", "mean_abs_change", "test_wf1"]
    mean = frame.groupby(["method", "norm"])[cols].mean()
    std = frame.groupby(["method", "norm"])[cols].std(ddof=1)
    print("\n| method | BatchNorm | best val wF1 | mean last 5 val wF1 | mean abs change | test wF1 |")
    print("|---|---|---|---|---|---|")
    for key in mean.index:
        cells = [f"{mean.loc[key, c]:.3f} ± {std.loc[key, c]:.3f}" for c in cols]
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    print(f"\n(mean ± standard deviation over seeds {args.seeds}; {len(frame)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
