"""The comparison's statistics and report on runs with known answers: paired t intervals, exact
sign-flip p-values, Holm, speed-ups in every cost unit, runs.csv round trip and the verdicts."""

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from cropseg.compare.experiments import Experiment, ReportError
from cropseg.compare.report import markdown, write_report
from cropseg.compare.runs import config_namers, read_runs, regime_key, runs_table
from cropseg.compare.statistics import first_reach, holm, paired, sign_flip_p, smallest_p, speedup
from cropseg.compare.verdicts import build, judge
from cropseg.core.params import flatten
from cropseg.evaluate.curve_area import auc

REPO = Path(__file__).resolve().parents[1]


def test_auc_is_the_trapezoid_mean_over_the_span():
    assert auc([100, 200, 400], [0.2, 0.4, 0.4]) == pytest.approx((0.3 * 100 + 0.4 * 200) / 300)
    assert auc([100], [0.7]) == 0.7


def test_first_reach_interpolates_and_is_inf_when_never_reached():
    assert first_reach([100, 200, 300], [0.2, 0.6, 0.9], 0.4) == pytest.approx(150)
    assert first_reach([100, 200], [0.5, 0.6], 0.4) == 100
    assert first_reach([100, 200], [0.5, 0.6], 0.7) == float("inf")


def test_speedup_in_samples_and_in_costs_with_a_fixed_il_cost():
    grid = np.array([100.0, 200, 300, 400])
    uniform, faster = np.array([0.2, 0.4, 0.6, 0.8]), np.array([0.4, 0.8, 0.85, 0.9])  # 0.8 at 400 vs 200
    assert speedup(grid, uniform, faster) == pytest.approx(2.0)
    # 3 forward passes per sample seen (block 2 scoring + training) against uniform's 1: 400 / 600
    assert speedup(grid, uniform, faster, method_rate=3.0) == pytest.approx(400 / 600)
    assert speedup(grid, uniform, faster, method_rate=1.0, method_fixed=200) == pytest.approx(1.0)
    assert speedup(grid, uniform, uniform * 0.5) == 0.0  # never reached within the budget


def test_sign_flip_p_is_exact_and_matches_scipy():
    diff = np.array([0.03, 0.01, 0.02, -0.005, 0.04, 0.015, 0.02, 0.01])
    signs = np.array(list(itertools.product((1, -1), repeat=8)))
    expected = np.mean(np.abs((signs * diff).mean(1)) >= abs(diff.mean()) - 1e-12)
    assert sign_flip_p(diff) == pytest.approx(expected)
    scipy_p = stats.permutation_test((diff,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue
    assert sign_flip_p(diff) == pytest.approx(scipy_p)
    assert sign_flip_p(np.full(5, 0.02)) == pytest.approx(2 / 32)  # the floor with 5 pairs: above 0.05
    assert sign_flip_p(np.full(8, 0.02)) == pytest.approx(2 / 256)


def test_paired_t_interval_and_holm():
    method, reference = np.array([0.80, 0.82, 0.79, 0.85, 0.81]), np.array([0.78, 0.80, 0.80, 0.81, 0.79])
    result = paired(method, reference)
    d = method - reference
    low, high = stats.t.interval(0.95, 4, loc=d.mean(), scale=stats.sem(d))
    assert (result.mean, result.low, result.high) == pytest.approx((d.mean(), low, high))
    assert result.n == 5 and result.p == pytest.approx(sign_flip_p(d))
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    assert holm([0.2, 0.01]) == pytest.approx([0.2, 0.02])
    assert judge(paired(np.full(8, 0.9) + np.arange(8) * 1e-3, np.full(8, 0.8)), 0.01) == "gain"
    assert judge(result, 0.3) == "no significant difference"
    # what n replicates can decide: the exact test's floor (every difference the same sign), times the family
    for n in (3, 5, 7, 8):
        assert sign_flip_p(np.linspace(0.01, 0.02, n)) == pytest.approx(smallest_p(n)) == pytest.approx(2 / 2 ** n)
    def floor(n: int, family: int) -> float:  # the smallest p_Holm of a family of exact tests on n pairs each
        return holm([smallest_p(n)] * family)[0]

    assert floor(5, 2) == pytest.approx(0.125) and floor(7, 2) == pytest.approx(0.03125)
    assert floor(8, 6) == pytest.approx(0.046875) and floor(3, 6) == 1.0
    assert holm([smallest_p(8), smallest_p(6)]) == pytest.approx([0.015625, 0.03125])  # unequal pairs: per test
    five = paired(np.full(5, 0.9) + np.arange(5) * 1e-3, np.full(5, 0.8))  # a large, consistent gain on 5 pairs
    assert judge(five, floor(5, 2), floor(5, 2)) == "undecidable"
    assert judge(five, floor(5, 1), floor(5, 1)) == "undecidable"  # 0.0625: even one test cannot
    seven = paired(np.full(7, 0.9) + np.arange(7) * 1e-3, np.full(7, 0.8))
    assert judge(seven, floor(7, 2), floor(7, 2)) == "gain"


def _experiment(method: str, block: int, replicate: int, f1: list[float], *, noisy: float = 0.2, union=False,
                drop=0.0, wall=10.0) -> Experiment:
    params = flatten({"selection": {"method": method, "block_size": block, "drop_irreducible": drop},
                      "train": {"seed": replicate}, "data": {"synthetic": {"seed": replicate}},
                      "split": {"seed": replicate}, "holdout": {"seed": replicate},
                      "protocol": {"label_noise": 0.2, "noise_unit": "parcel", "noise_classes": "similar",
                                   "noisy_val": True, "train_on_holdout": union, "noise_seed": replicate,
                                   "samples_seen": 400, "test_points": 4}})
    curve = pd.DataFrame({"samples_seen": [100, 200, 300, 400], "weighted_f1": f1, "macro_f1": [v - 0.1 for v in f1]})
    return Experiment(f"{method}-{block}-{replicate}-{union}-{drop}", "0" * 40, params,
                      {"holdout_model": {"weighted_f1": 0.7, "macro_f1": 0.5}},
                      {"selection": {"noisy_share_selected": noisy}, "train_samples": 100},
                      {"holdout": {"train_samples": 20}},
                      {"wall_time_s": wall, "samples_seen": 400, "samples_considered": 400 * block},
                      {"wall_time_s": 5.0, "samples_seen": 200}, curve)


def _grid_of_runs(replicates: int = 8) -> list[Experiment]:
    runs = []
    for r in range(replicates):
        j = 0.01 * (r % 3)
        runs.append(_experiment("uniform", 1, r, [0.2 + j, 0.4, 0.6, 0.8]))
        runs.append(_experiment("uniform", 1, r, [0.3 + j, 0.5, 0.7, 0.82 + j], union=True))  # the best baseline
        runs.append(_experiment("uniform", 1, r, [0.2 + j, 0.42, 0.6, 0.79], drop=0.2))
        runs.append(_experiment("irreducible", 4, r, [0.1 + j, 0.3, 0.5, 0.7], noisy=0.05))
        # rho_loss: ahead of uniform by a steady margin, level with the union baseline give or take
        runs.append(_experiment("rho_loss", 4, r, [0.3 + j, 0.5 + (-1) ** r * 0.01, 0.7, 0.82 + j], noisy=0.05,
                                wall=20.0))
    return runs


def test_runs_table_names_runs_from_the_regimes_file_and_round_trips(tmp_path):
    methods = yaml.safe_load((REPO / "experiments/regimes.yaml").read_text())["methods"]
    config = {"regimes": {"realistic": {"params": {"protocol.noise_unit": "parcel", "protocol.noisy_val": True}}},
              "methods": methods}
    regime, method = config_namers(config)
    table = runs_table(_grid_of_runs(), regime_name=regime, method_name=method)
    assert set(table.regime) == {"realistic"}
    assert sorted(set(table.method)) == ["il_filter_uniform", "irreducible_b4", "rho_loss_b4", "uniform",
                                         "uniform_train_and_holdout"]
    rho = table[table.method == "rho_loss_b4"].iloc[0]
    # forward passes: 400 seen + 1,600 scored; the IL model: its 200 samples seen + one pass over 100
    assert (rho.forward_passes, rho.il_forward_passes, rho.il_wall_s) == (2000, 300, 5.0)
    assert table[table.method == "uniform"].iloc[0].il_forward_passes == 0
    assert table[table.method == "il_filter_uniform"].iloc[0].il_forward_passes == 200 + 125  # 100 kept of 125
    assert rho.auc_weighted_f1 == pytest.approx(auc([100, 200, 300, 400], [0.3, rho["wf1@200"], 0.7, 0.82]))
    table.to_csv(tmp_path / "runs.csv", index=False)
    again = read_runs(tmp_path / "runs.csv")
    present = [c for c in table.columns if table[c].notna().all()]  # params these fake runs lack read back as NaN
    assert len(present) > 40
    pd.testing.assert_frame_equal(again[present], table[present], check_dtype=False)
    with pytest.raises(ReportError, match="same regime, method and replicate"):
        runs_table(_grid_of_runs() + _grid_of_runs()[:1], regime_name=regime, method_name=method)


def test_verdicts_compare_with_uniform_and_the_best_equal_information_baseline(tmp_path):
    table = runs_table(_grid_of_runs())
    (regime,) = build(table)
    assert regime.best_baseline == "uniform on train + holdout"
    rho = regime.method("rho_loss (block 4)")
    assert rho.vs_uniform["auc"].low > 0 and judge(rho.vs_uniform["auc"], rho.holm["vs_uniform.auc"]) == "gain"
    assert judge(rho.vs_best["auc"], rho.holm["vs_best.auc"]) == "no significant difference"
    assert rho.vs_best["auc"].low < 0 < rho.vs_best["auc"].high
    assert rho.holm["vs_uniform.auc"] >= rho.vs_uniform["auc"].p
    rho_runs = table[table.method == "rho_loss (block 4)"]
    assert rho.vs_il_model.mean == pytest.approx(rho_runs.final_weighted_f1.mean() - 0.7)
    # reaches uniform's final mean (0.8 at 400 samples) sooner; twice the wall time, 5x the forwards per sample
    seen = rho.speedups["seen"]
    assert seen == pytest.approx(400 / first_reach([100, 200, 300, 400], regime.curves[rho.name].mean(0), 0.8))
    assert seen > 1 and rho.speedups["wall"] == pytest.approx(seen / 2)
    assert rho.speedups["forward"] == pytest.approx(seen / 5)  # 4 scored + 1 trained per sample seen
    assert rho.speedups["wall_il"] < rho.speedups["wall"]
    assert regime.method("irreducible (block 4)").speedups["seen"] == 0.0  # never reaches 0.8
    write_report(table, [regime], [], tmp_path / "out", "test")
    report = (tmp_path / "out/report.md").read_text()
    assert "| rho_loss (block 4) | 8 |" in report and "IL model itself" in report
    assert "Best equal-information baseline (highest mean AUC): **uniform on train + holdout**" in report
    assert "Primary family: 2 comparison(s), Holm-corrected; with 8 replicates the smallest p_Holm any of them " \
           "can reach is 0.016." in report
    assert "AUC vs uniform: gain (" in report
    # 5 replicates cannot decide anything with an exact test: the report says so instead of "no difference"
    five_table = runs_table(_grid_of_runs(5))
    (five,) = build(five_table)
    rho5 = five.method("rho_loss (block 4)")
    assert rho5.floor == pytest.approx({"vs_uniform.auc": 0.125, "vs_best.auc": 0.125}) and five.family == 2
    write_report(five_table, [five], [], tmp_path / "five", "test")
    report = (tmp_path / "five/report.md").read_text()
    assert "AUC vs uniform: undecidable with 5 replicates (p_Holm cannot fall below 0.125)" in report
    table_rows = [line for line in report.splitlines() if line.startswith("| ")]
    assert len(table_rows) == 7 and not any("**" in line for line in table_rows)
    assert "no verdict is possible here, whatever the data" in report
    # a missing run: 8 replicates against uniform, 6 against the best baseline; each comparison its own floor
    uneven = runs_table([r for r in _grid_of_runs(8) if not (r.params["train.seed"] in (6, 7)
                                                                 and r.params["protocol.train_on_holdout"])])
    (regime8,) = build(uneven)
    rho8 = regime8.method("rho_loss (block 4)")
    assert (rho8.vs_uniform["auc"].n, rho8.vs_best["auc"].n) == (8, 6)
    assert rho8.floor == pytest.approx({"vs_uniform.auc": 2 * 2 / 2 ** 8, "vs_best.auc": 2 / 2 ** 6})
    assert "with 6 to 8 replicates the smallest p_Holm any of them can reach is 0.016 to 0.031." in \
        markdown([regime8], [], "test", len(uneven))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "parcel_noise_20_similar_crops_noisy_holdout_curves.png", "report.md", "runs.csv", "summary.json"]
    # the committed table alone gives the same report, to the last digit
    rebuilt = read_runs(tmp_path / "out/runs.csv")
    write_report(rebuilt, build(rebuilt), [], tmp_path / "again", "test")
    for name in ("summary.json", "report.md", "runs.csv"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "out" / name).read_text(), name
    with pytest.raises(ValueError, match="no uniform runs"):
        build(table[table.method != "uniform"])


def test_regime_key_ignores_method_replicate_and_tracking():
    a = flatten({"selection": {"method": "loss", "block_size": 2}, "train": {"seed": 1, "lr": 0.1},
                 "protocol": {"train_on_holdout": True}, "tracking": {"wandb": "offline"}})
    b = flatten({"selection": {"method": "uniform", "block_size": 1}, "train": {"seed": 3, "lr": 0.1},
                 "protocol": {"train_on_holdout": False}, "tracking": {"wandb": "disabled"}})
    assert regime_key(a) == regime_key(b)
    assert regime_key(a) != regime_key(b | {"train.lr": 0.2})
