"""Recompute the comparison report's primary statistics with reference implementations, side by side.

    pip install statsmodels          # not a project requirement: only this check uses it
    python bench/statistics_reference.py [metrics/comparison]

For every regime of ``summary.json`` and every primary comparison (each RHO-Loss variant's AUC
against uniform and against the best equal-information baseline), from ``runs.csv`` alone:

* the 95 % interval of the paired mean difference by ``scipy.stats.ttest_rel(...).confidence_interval``,
* the two-sided p by ``scipy.stats.permutation_test`` (``permutation_type="samples"``: sign flips,
  every pattern enumerated),
* the Holm-adjusted p by ``statsmodels.stats.multitest.multipletests(method="holm")``,

and prints them beside the report's numbers with the largest absolute difference. None of these
three is the code that wrote the report (``cropseg.compare.statistics``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats


def main(folder: Path) -> int:
    try:
        from statsmodels.stats.multitest import multipletests
    except ImportError:
        print("statistics_reference: needs statsmodels (`pip install statsmodels`), the Holm reference")
        return 2
    runs = pd.read_csv(folder / "runs.csv")
    summary = json.loads((folder / "summary.json").read_text())
    worst = {"interval": 0.0, "p": 0.0, "p_holm": 0.0}
    for regime in summary["regimes"]:
        table = runs[runs.regime == regime["regime"]]
        auc = {m: g.set_index("replicate")["auc_weighted_f1"].sort_index() for m, g in table.groupby("method")}
        rows = []
        for method in regime["methods"]:
            if not method["vs_best_baseline"]:
                continue
            for key, other in (("vs_uniform", "uniform"), ("vs_best_baseline", regime["best_baseline"])):
                both = auc[method["method"]].index.intersection(auc[other].index)
                a, b = auc[method["method"]].loc[both].to_numpy(), auc[other].loc[both].to_numpy()
                interval = stats.ttest_rel(a, b).confidence_interval(0.95)
                p = stats.permutation_test((a - b,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                           alternative="two-sided").pvalue
                rows.append((method["method"], key, method[key]["auc"], method["holm"][key.replace("_baseline", "") + ".auc"],
                             (interval.low, interval.high), p))
        holm = multipletests([r[5] for r in rows], method="holm")[1]
        print(f"{regime['regime']} ({len(rows)} primary tests)")
        for (name, key, ours, ours_holm, (low, high), p), p_holm in zip(rows, holm):
            print(f"  {name:13s} {key:17s} interval ours [{ours['low']:+.4f}, {ours['high']:+.4f}] scipy "
                  f"[{low:+.4f}, {high:+.4f}]  p ours {ours['p']:.4f} scipy {p:.4f}  "
                  f"p_Holm ours {ours_holm:.4f} statsmodels {p_holm:.4f}")
            worst["interval"] = max(worst["interval"], abs(ours["low"] - low), abs(ours["high"] - high))
            worst["p"] = max(worst["p"], abs(ours["p"] - p))
            worst["p_holm"] = max(worst["p_holm"], abs(ours_holm - p_holm))
    print("largest absolute difference: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "metrics/comparison")))
