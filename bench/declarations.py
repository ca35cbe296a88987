"""The declaration check measured: precision and recall of ``suspect`` flags against known mislabelled parcels.

    PYTHONPATH=src nice -n 10 python bench/declarations.py                 # 5 seeds x 6 patches, 10 % noise
    PYTHONPATH=src nice -n 10 python bench/declarations.py --seeds 1 2 --mislabelled 0.2

For each seed, the synthetic generator writes a fresh season (``data.synthetic.seed`` = the seed,
never the training data's seed 0) in which a fraction ``mislabelled`` of the crop parcels carries a
wrong declared class (``mislabelled_unit: parcel``), and the clean labels beside it
(``truth/clean_labels``). The pipeline's trained model (``models/model.pt``, trained on seed 0 with
clean declarations) maps it with the stages' code path (medians, whole-patch inference,
:func:`cropseg.nn.parcels.parcel_table`). A parcel is truly mislabelled when its declared class
differs from its clean class (in the model's classes); it is flagged at threshold ``t`` when the
predicted class differs from the declaration with mean probability above ``t``.

Prints, per threshold: flags, precision and recall pooled over seeds with Wilson 95 % intervals, and
the per-seed range; then parcel accuracy against the clean truth by mean probability vs majority.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm

from cropseg.core.params import Data, Medians, SyntheticData
from cropseg.fetch.stage import fetch_s4a
from cropseg.medians.stage import run_medians
from cropseg.nn.checkpoint import load_model
from cropseg.nn.dataset import SubPatchDataset
from cropseg.nn.parcels import parcel_table
from cropseg.nn.patch_inference import iter_patches
from cropseg.nn.precision import FP32, fix_cpu_threads
from cropseg.s4a.netcdf import find_patches
from cropseg.s4a.parcels import read_parcels
from cropseg.split.labels import LabelSet

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def wilson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (no normal-approximation collapse at 0 or 1)."""
    if trials == 0:
        return float("nan"), float("nan")
    z = norm.ppf(0.5 + level / 2)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return float(centre - half), float(centre + half)


def season(seed: int, patches: int, mislabelled: float, model_path: Path, work: Path) -> pd.DataFrame:
    """One seed's parcels: declared, clean, and the mean-probability and majority predictions."""
    data = Data(synthetic=SyntheticData(seed=seed, patches=patches, mislabelled=mislabelled,
                                        mislabelled_unit="parcel"))
    fetch_s4a(data, work / "netcdf", workers=1)
    run_medians(work / "netcdf", work / "medians", Medians(workers=1), progress=False)
    paths = sorted(p.relative_to(work / "netcdf").as_posix() for p in find_patches(work / "netcdf")
                   if "truth" not in p.parts)
    device = torch.device("cpu")
    model, content = load_model(model_path, device)
    label_set = LabelSet.from_dict(content["labels"], str(model_path))
    dataset = SubPatchDataset(work / "medians", paths, label_set, months=content["loader"]["months"],
                              normalize=content["loader"]["normalize"], skip_empty=False)
    rows = []
    for maps in iter_patches(model, dataset, device, FP32):
        relpath = paths[maps.position]
        labels = maps.labels.numpy()
        parcels = read_parcels(work / "netcdf" / relpath, labels.shape)
        clean = label_set.map(np.load(work / "netcdf" / "truth" / "clean_labels" / f"{Path(relpath).stem}.npy"))
        probs = maps.log_probs.exp().numpy()
        mean = parcel_table(parcels, labels, probs, method="mean")
        majority = parcel_table(parcels, labels, probs, method="majority")
        truth = parcel_table(parcels, clean, probs)  # its ``declared`` column is the clean class
        rows.append(pd.DataFrame({"seed": seed, "patch": Path(relpath).stem, "parcel_id": mean.parcel_id,
                                  "declared": mean.declared, "clean": truth.declared, "predicted": mean.predicted,
                                  "confidence": mean.confidence, "predicted_majority": majority.predicted}))
    return pd.concat(rows, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--patches", type=int, default=6, help="patches per seed")
    parser.add_argument("--mislabelled", type=float, default=0.1, help="fraction of crop parcels declared wrong")
    args = parser.parse_args()
    fix_cpu_threads(2, torch.device("cpu"))
    started = time.perf_counter()
    frames = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix=f"declarations-{seed}-") as work:
            frames.append(season(seed, args.patches, args.mislabelled, args.model, Path(work)))
    table = pd.concat(frames, ignore_index=True)
    declared = table[table.declared > 0]
    wrong = declared.declared != declared.clean
    print(f"{len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}) x {args.patches} patches, "
          f"mislabelled {args.mislabelled}: {len(declared)} declared parcels, {int(wrong.sum())} truly mislabelled "
          f"({time.perf_counter() - started:.0f} s)")
    print("| threshold | flagged | precision [95 % CI] | recall [95 % CI] | precision per seed | recall per seed |")
    print("|---|---|---|---|---|---|")
    for t in THRESHOLDS:
        flag = (declared.predicted != declared.declared) & (declared.confidence > t)
        tp = int((flag & wrong).sum())
        p_lo, p_hi = wilson(tp, int(flag.sum()))
        r_lo, r_hi = wilson(tp, int(wrong.sum()))
        per_p, per_r = [], []
        for seed in args.seeds:
            s = declared.seed == seed
            per_p.append((flag & wrong & s).sum() / max(1, (flag & s).sum()))
            per_r.append((flag & wrong & s).sum() / max(1, (wrong & s).sum()))
        print(f"| {t:.2f} | {int(flag.sum())} | {tp / max(1, flag.sum()):.3f} [{p_lo:.3f}, {p_hi:.3f}] "
              f"| {tp / max(1, wrong.sum()):.3f} [{r_lo:.3f}, {r_hi:.3f}] "
              f"| {min(per_p):.2f}–{max(per_p):.2f} | {min(per_r):.2f}–{max(per_r):.2f} |")
    crops = table[table.clean > 0]
    n = len(crops)
    for name, column in (("mean probability", "predicted"), ("majority", "predicted_majority")):
        correct = int((crops[column] == crops.clean).sum())
        lo, hi = wilson(correct, n)
        print(f"parcel accuracy vs clean truth, {name}: {correct / n:.4f} [{lo:.4f}, {hi:.4f}] ({n} parcels)")
    both = (crops.predicted == crops.clean).astype(int) - (crops.predicted_majority == crops.clean).astype(int)
    print(f"mean - majority: {both.sum():+d} parcels ({int((both > 0).sum())} only mean right, "
          f"{int((both < 0).sum())} only majority right)")


if __name__ == "__main__":
    main()
