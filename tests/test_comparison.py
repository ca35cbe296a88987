"""The comparison statistics against hand-computed values, and the report on synthetic experiments."""

import numpy as np
import pandas as pd
import pytest

from cropseg.compare.statistics import first_reach, paired_bootstrap, speedup
from cropseg.evaluate.curve_area import auc
from cropseg.compare.results import Experiment, ReportError, build_regimes, regime_key
from cropseg.core.params import flatten


def test_auc_is_the_trapezoid_mean_over_the_span():
    assert auc([100, 200, 400], [0.2, 0.4, 0.4]) == pytest.approx((0.3 * 100 + 0.4 * 200) / 300)
    assert auc([100], [0.7]) == 0.7


def test_first_reach_interpolates_and_is_inf_when_never_reached():
    assert first_reach([100, 200, 300], [0.2, 0.6, 0.9], 0.4) == pytest.approx(150)
    assert first_reach([100, 200], [0.5, 0.6], 0.4) == 100
    assert first_reach([100, 200], [0.5, 0.6], 0.7) == float("inf")


def test_speedup_is_samples_to_uniforms_final_mean_ratio():
    grid = np.array([100.0, 200, 300, 400])
    uniform = np.array([[0.2, 0.4, 0.6, 0.8], [0.2, 0.4, 0.6, 0.8]])  # reaches 0.8 at 400
    faster = np.array([[0.4, 0.8, 0.8, 0.8], [0.4, 0.8, 0.9, 0.9]])  # mean reaches 0.8 at 200
    assert speedup(uniform, faster, grid) == pytest.approx(2.0)
    assert speedup(uniform, uniform * 0.5, grid) == 0.0  # never reached: the lower bound


def test_paired_bootstrap_interval_covers_a_constant_difference_exactly():
    differences = np.full(5, 0.03)
    interval = paired_bootstrap(lambda i: differences[i].mean(), 5, replicates=500)
    assert interval.value == pytest.approx(0.03) and interval.low == pytest.approx(0.03)
    assert interval.excludes_zero
    noisy = np.array([0.05, -0.04, 0.02, -0.03, 0.01])
    spread = paired_bootstrap(lambda i: noisy[i].mean(), 5, replicates=2000)
    assert spread.low < 0 < spread.high and not spread.excludes_zero


def _experiment(method: str, block: int, seed: int, f1: list[float], noisy: float, **extra) -> Experiment:
    params = flatten({"selection": {"method": method, "block_size": block}, "train": {"seed": seed},
                      "protocol": {"label_noise": 0.4, "samples_seen": 400, "test_points": 4}, **extra})
    curve = pd.DataFrame({"samples_seen": [100, 200, 300, 400], "weighted_f1": f1})
    return Experiment(f"{method}-{block}-{seed}", "0" * 40, params,
                      {"holdout_model": {"weighted_f1": 0.9, "against": "clean"}},
                      {"selection": {"noisy_share_selected": noisy}}, {"holdout": {"train_samples": 108}}, curve)


def test_report_pairs_seeds_and_flags_only_intervals_that_exclude_zero():
    experiments = []
    for seed in range(5):
        jitter = 0.01 * seed
        experiments.append(_experiment("uniform", 1, seed, [0.2 + jitter, 0.4, 0.6, 0.8], 0.4))
        # rho_loss: always ahead of its paired uniform; random: +-noise around it
        experiments.append(_experiment("rho_loss", 4, seed, [0.4 + jitter, 0.8, 0.85, 0.86], 0.1))
        experiments.append(_experiment("random", 4, seed, [0.2 + jitter, 0.4 + (-1) ** seed * 0.02, 0.6, 0.8], 0.4))
        experiments.append(_experiment("loss", 4, seed, [0.1 + jitter, 0.3, 0.5, 0.7], 0.7))
    experiments.append(_experiment("uniform", 1, 0, [0.1, 0.1, 0.1, 0.1], 0.2, data={"synthetic": {"redundancy": 0.3}}))
    with pytest.raises(ReportError, match="no uniform"):
        build_regimes([e for e in experiments if e.method != "uniform"], replicates=200)
    regimes = build_regimes(experiments, replicates=500)
    assert len(regimes) == 2  # the redundancy experiment is another regime
    regime = next(r for r in regimes if len(r.rows) == 4)
    rows = {(r.method, r.block): r for r in regime.rows}
    rho, rand, loss = rows[("rho_loss", 4)], rows[("random", 4)], rows[("loss", 4)]
    assert rho.seeds == [0, 1, 2, 3, 4]
    assert rho.values["auc_vs_uniform"].excludes_zero and rho.values["auc_vs_uniform"].low > 0
    assert not rand.values["auc_vs_uniform"].excludes_zero
    assert rho.values["speedup"].value == pytest.approx(400 / (100 + (0.8 - 0.42) / (0.8 - 0.42) * 100), rel=1e-6)
    assert rho.values["noisy_share_ratio_to_loss"].value == pytest.approx(0.1 / 0.7)
    assert loss.values["auc_vs_uniform"].high < 0
    assert regime.holdout == {"clean_test_weighted_f1": 0.9, "scored_against": "clean", "holdout_samples": 108}


def test_regime_key_ignores_method_block_seed_and_tracking():
    a = flatten({"selection": {"method": "loss", "block_size": 2}, "train": {"seed": 1, "lr": 0.1},
                 "tracking": {"wandb": "offline"}})
    b = flatten({"selection": {"method": "uniform", "block_size": 1}, "train": {"seed": 3, "lr": 0.1},
                 "tracking": {"wandb": "disabled"}})
    assert regime_key(a) == regime_key(b)
    assert regime_key(a) != regime_key(b | {"train.lr": 0.2})
