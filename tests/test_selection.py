"""Data selection: scores on hand-made values, the method grammar, top-k, the selector's
arithmetic, stored irreducible losses, and RHO-Loss rejecting planted label noise."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cropseg.nn.dataset import Batch
from cropseg.nn.precision import FP32
from cropseg.nn.loss import class_weights
from cropseg.core.params import Loss, ParamsError, Selection, load_params, parse_params
from cropseg.selection.method import check_method
from cropseg.selection.selector import SelectionError, Selector, margin, parse_method, per_sample_scores, top_k

REPO = Path(__file__).resolve().parents[1]


def _log_probs(probabilities: list[list[float]]) -> torch.Tensor:
    """(N=1, C, H=1, W=len) log-probabilities from per-pixel class probabilities."""
    return torch.tensor(probabilities, dtype=torch.float32).T.log().reshape(1, len(probabilities[0]), 1, -1)


def test_margin_on_hand_made_probabilities():
    # pixel 1: true class 1 (p=.5), best wrong class 2 (p=.3); pixel 2: true 2 (p=.2), best wrong 1 (p=.7)
    log_probs = _log_probs([[0.1, 0.5, 0.3, 0.1], [0.05, 0.7, 0.2, 0.05]])
    target = torch.tensor([[[1, 2]]])
    expected = ((math.log(0.3) - math.log(0.5)) + (math.log(0.7) - math.log(0.2))) / 2
    assert margin(log_probs, target).item() == pytest.approx(expected, rel=1e-5)
    # background pixels do not count, background is never the best wrong class
    log_probs = _log_probs([[0.9, 0.05, 0.05], [0.1, 0.6, 0.3]])
    assert margin(log_probs, torch.tensor([[[0, 1]]])).item() == pytest.approx(math.log(0.3 / 0.6), rel=1e-5)
    assert math.isnan(margin(log_probs, torch.tensor([[[0, 0]]])).item())


class _Fixed(torch.nn.Module):
    """A 'model' returning stored log-probabilities, to score hand-made cases."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.log_probs = log_probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_probs[x[:, 0, 0, 0, 0].long()]


def _block(targets: list[list[int]]) -> Batch:
    n = len(targets)
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1, 1, 1, 1).expand(n, 1, 1, 1, len(targets[0])).clone()
    return Batch(torch.arange(n) + 100, x, torch.tensor(targets).reshape(n, 1, -1))


def test_loss_and_rho_loss_scores_on_known_values(tmp_path):
    # sample 0: p(true)=.5 on both pixels; sample 1: p(true)=.1; sample 2: no parcel pixels
    probabilities = [[[0.5, 0.5, 0.0 + 1e-9], [0.5, 0.5, 1e-9]],
                     [[0.45, 0.1, 0.45], [0.45, 0.1, 0.45]],
                     [[0.4, 0.3, 0.3], [0.4, 0.3, 0.3]]]
    log_probs = torch.cat([_log_probs(p) for p in probabilities])
    block = _block([[1, 1], [1, 1], [0, 0]])
    weights = torch.tensor([0.0, 1.0, 1.0])
    scores = per_sample_scores(_Fixed(log_probs), block, weights, {"loss"}, physical_batch_size=2, precision=FP32)
    np.testing.assert_allclose(scores["loss"][:2].numpy(), [-math.log(0.5), -math.log(0.1)], rtol=1e-5)
    assert math.isnan(scores["loss"][2])

    stored = np.full(103, np.inf, dtype=np.float32)
    stored[100:103] = [0.1, 2.5, np.inf]
    np.save(tmp_path / "losses.npy", stored)
    selector = Selector(Selection(method="rho_loss", block_size=3), weights=weights, physical_batch_size=2, precision=FP32,
                        device=torch.device("cpu"), seed=0, irreducible_path=tmp_path, truth=None, n_classes=3)
    rho = selector.scores(_Fixed(log_probs), block, step=0)
    np.testing.assert_allclose(rho[:2].numpy(), [-math.log(0.5) - 0.1, -math.log(0.1) - 2.5], rtol=1e-5)
    assert rho[2] == -math.inf
    # rho-loss prefers sample 0 (learnable, not yet learnt) over sample 1 (high loss, but irreducible)
    batches, telemetry = selector.select(_Fixed(log_probs), block, 1, step=0)
    assert [b.index.tolist() for b in batches] == [[100]]
    assert telemetry["score_selected"] == pytest.approx(float(rho[0]))

    combined = Selector(Selection(method="1.0*loss - 0.5*irreducible", block_size=3), weights=weights,
                        physical_batch_size=2, precision=FP32, device=torch.device("cpu"), seed=0,
                        irreducible_path=tmp_path, truth=None, n_classes=3)
    values = combined.scores(_Fixed(log_probs), block, step=0)
    # irreducible = -IL, so "loss - 0.5*irreducible" = loss + 0.5 * IL
    np.testing.assert_allclose(values[:2].numpy(), [-math.log(0.5) + 0.05, -math.log(0.1) + 1.25], rtol=1e-5)


@pytest.mark.parametrize("text, expected", [
    ("uniform", None),
    ("loss", {"loss": 1.0}),
    ("rho_loss", {"rho_loss": 1.0}),
    ("1.0*loss - 0.5*irreducible", {"loss": 1.0, "irreducible": -0.5}),
    ("0.5*loss + 1.0*rho_loss", {"loss": 0.5, "rho_loss": 1.0}),
    ("-2*margin+random", {"margin": -2.0, "random": 1.0}),
    ("loss + loss", {"loss": 2.0}),
    (".5 * margin", {"margin": 0.5}),
])
def test_method_grammar(text, expected):
    assert parse_method(text) == expected


@pytest.mark.parametrize("text, message", [
    ("los", "unknown score 'los'"),
    ("1.0*loss 0.5*margin", "cannot parse at position"),
    ("1.0*", "cannot parse at position"),
    ("loss - uniform", "unknown score 'uniform'"),
    ("", "cannot parse|empty"),
])
def test_bad_methods_are_clear_errors(text, message):
    with pytest.raises(SelectionError, match=message):
        parse_method(text)


def test_bad_method_fails_params_validation():
    with pytest.raises(ParamsError, match=r"selection.method: .*unknown score 'rho'"):
        check_method(parse_params({"selection": {"method": "rho"}}).selection.method)


def test_top_k_ties_nan_and_order():
    scores = torch.tensor([1.0, 3.0, float("nan"), 3.0, -math.inf, 2.0])
    assert top_k(scores, 3).tolist() == [1, 3, 5]  # order of the block kept
    assert top_k(scores, 2).tolist() == [1, 3]
    assert top_k(torch.tensor([2.0, 2.0, 2.0, 2.0]), 2).tolist() == [0, 1]  # ties: earlier first
    assert top_k(scores, 5).tolist() == [0, 1, 2, 3, 5]  # NaN ranks with -inf, after finite, before later -inf
    assert top_k(scores, 6).tolist() == [0, 1, 2, 3, 4, 5]


def test_selector_arithmetic_blocks_and_batches():
    weights = torch.tensor([0.0, 1.0, 1.0])
    cfg = Selection(method="random", block_size=4, n_batches_per_block=2)
    selector = Selector(cfg, weights=weights, physical_batch_size=8, precision=FP32, device=torch.device("cpu"), seed=1,
                        irreducible_path=None, truth=None, n_classes=3)
    assert selector.block_samples(batch_size=3) == 4 * 2 * 3
    block = _block([[1, 2]] * 24)
    batches, _ = selector.select(torch.nn.Identity(), block, 3, step=7)
    assert [len(b) for b in batches] == [3, 3]
    kept = torch.cat([b.index for b in batches])
    assert kept.tolist() == sorted(kept.tolist())  # original order
    again, _ = selector.select(torch.nn.Identity(), block, 3, step=7)
    assert torch.equal(torch.cat([b.index for b in again]), kept)  # seeded by (seed, step)
    # block_size 1 means no selection, whatever the method
    plain = Selector(Selection(method="loss", block_size=1), weights=weights, physical_batch_size=8, precision=FP32,
                     device=torch.device("cpu"), seed=1, irreducible_path=None, truth=None, n_classes=3)
    assert plain.block_samples(3) == 3
    batches, telemetry = plain.select(torch.nn.Identity(), block.take(slice(0, 3)), 3, step=0)
    assert len(batches) == 1 and len(batches[0]) == 3 and "score_selected" not in telemetry


def test_irreducible_methods_need_the_stored_losses(tmp_path):
    with pytest.raises(SelectionError, match="run the irreducible_loss stage"):
        Selector(Selection(method="rho_loss", block_size=2), weights=torch.ones(3), physical_batch_size=2, precision=FP32,
                 device=torch.device("cpu"), seed=0, irreducible_path=tmp_path, truth=None, n_classes=3)


def test_rho_loss_rejects_planted_noise_that_loss_keeps(tmp_path):
    """Half the samples carry labels no model can fit (high loss for the target model AND the
    holdout model); the other half are learnable but not learnt yet. Loss picks the noise,
    RHO-Loss picks the learnable ones; the noisy-share telemetry shows it."""
    rng = np.random.default_rng(0)
    n, pixels = 16, 8
    noisy = np.arange(n) % 2 == 1
    # target model: p(true) = 0.3 on clean samples (learnable, not yet learnt), 0.05 on noisy ones
    p_true = np.where(noisy, 0.05, 0.3)[:, None] * rng.uniform(0.9, 1.1, (n, pixels))
    probabilities = np.stack([np.full((n, pixels), 1e-3), p_true, 1 - p_true - 1e-3], axis=1)
    log_probs = torch.tensor(np.log(probabilities), dtype=torch.float32).reshape(n, 3, 1, pixels)
    block = _block([[1] * pixels] * n)
    # holdout model: fits clean samples well (low irreducible loss), cannot fit noise either
    stored = np.full(100 + n, np.inf, dtype=np.float32)
    stored[100:] = np.where(noisy, -np.log(0.06), -np.log(0.9))
    np.save(tmp_path / "losses.npy", stored)
    truth = {"parcel": np.full(100 + n, pixels), "noisy": np.where(np.arange(100 + n) % 2 == 1, pixels, 0)}
    picks = {}
    for method in ("loss", "rho_loss"):
        selector = Selector(Selection(method=method, block_size=2), weights=torch.tensor([0.0, 1.0, 1.0]),
                            physical_batch_size=4, precision=FP32, device=torch.device("cpu"), seed=0,
                            irreducible_path=tmp_path, truth=truth, n_classes=3)
        batches, telemetry = selector.select(_Fixed(log_probs), block, 8, step=0)
        picks[method] = (torch.cat([b.index for b in batches]) - 100).numpy()
        assert telemetry["noisy_share_block"] == pytest.approx(0.5)
        picks[method + "_share"] = telemetry["noisy_share_selected"]
    assert noisy[picks["loss"]].all() and picks["loss_share"] == 1.0
    assert not noisy[picks["rho_loss"]].any() and picks["rho_loss_share"] == 0.0


def test_class_weight_default_is_the_thesis_value():
    thesis = 0.1  # the thesis' interpolation towards inverse frequency
    schema_default = Loss().class_weights_weight
    assert schema_default == thesis
    assert load_params(REPO / "params.yaml").loss.class_weights_weight == thesis
    weights = class_weights(np.array([100, 80, 20]), schema_default)
    # w = 0.9 * 1 + 0.1 / (2 * freq): freq 0.8 -> 0.9625, freq 0.2 -> 1.15
    np.testing.assert_allclose(weights.numpy(), [0.0, 0.9625, 1.15], rtol=1e-6)


def _oracle(netcdf, records, label_set, per_patch, sub_x):
    """Per sample: labelled and noisy pixels from the label and clean-label arrays themselves,
    in code space and in the label set's model-class space."""
    import xarray as xr

    from cropseg.s4a.netcdf import parse_patch_name

    n = len(records) * per_patch
    out = {key: np.zeros(n, np.int64) for key in ("parcel", "noisy", "code_parcel", "code_noisy")}
    for p, record in enumerate(records):
        labels = xr.open_dataset(netcdf / record["path"], group="labels")["labels"].values
        clean = np.load(netcdf / "truth" / "clean_labels" / f"{parse_patch_name(record['path']).stem}.npy")
        for i in range(per_patch):
            wy, wx = divmod(i, sub_x)
            window = np.s_[wy * 61:(wy + 1) * 61, wx * 61:(wx + 1) * 61]
            label, true = labels[window], clean[window]
            mapped, mapped_true = label_set.map(label), label_set.map(true)
            out["parcel"][p * per_patch + i] = (mapped > 0).sum()
            out["noisy"][p * per_patch + i] = ((mapped > 0) & (mapped != mapped_true)).sum()
            out["code_parcel"][p * per_patch + i] = (label > 0).sum()
            out["code_noisy"][p * per_patch + i] = ((label > 0) & (label != true)).sum()
    return out


@pytest.mark.parametrize("label_set_name", ["s4a11", "eight", "cereals_maize"])
def test_truth_per_sample_counts_in_model_class_space(tmp_path, label_set_name):
    """s4a11 maps generated codes (190, 810, 910) to background; eight merges cereals (110 labelled
    150 is no noise there); cereals_maize does both. The truth then differs from code-space counts."""
    from types import SimpleNamespace

    from cropseg.fetch.stage import fetch_s4a
    from cropseg.split.labels import LabelSet, load_label_set
    from cropseg.s4a.netcdf import read_index
    from cropseg.selection.selector import truth_per_sample

    from conftest import tiny_data

    if label_set_name == "cereals_maize":
        label_set = LabelSet.from_dict({"name": "cereals_maize", "classes": [
            {"name": "cereals", "codes": [110, 150, 160, 170, 190]}, {"name": "maize", "codes": [120]}]})
    else:
        label_set = load_label_set(label_set_name, REPO / "configs" / "labels")
    netcdf = tmp_path / "netcdf"
    fetch_s4a(tiny_data(patches=4, patch_size=122, acquisitions=3, mislabelled=0.4, seed=5), netcdf, workers=1)
    # the dataset's patch order is its split list's, not the table's; a patch of the data is left out
    records = [{"path": info.path} for info in read_index(netcdf / "index.csv")][::-1][:3]
    dataset = SimpleNamespace(records=records, per_patch=4, sub_x=2, window=61, label_set=label_set)
    truth = truth_per_sample(dataset, netcdf / "truth" / "truth.csv")
    oracle = _oracle(netcdf, records, label_set, 4, 2)
    np.testing.assert_array_equal(truth["parcel"], oracle["parcel"])
    np.testing.assert_array_equal(truth["noisy"], oracle["noisy"])
    assert truth["parcel"].dtype == truth["noisy"].dtype == np.int64
    assert 0 < truth["noisy"].sum() < truth["parcel"].sum()
    assert (truth["noisy"] <= truth["parcel"]).all()
    # the case the model-class space is for: code-space counts would be other numbers
    assert truth["noisy"].sum() < oracle["code_noisy"].sum()
    if label_set_name == "eight":  # eight covers every generated code: it merges, maps none to background
        assert truth["parcel"].sum() == oracle["code_parcel"].sum()
    else:
        assert truth["parcel"].sum() < oracle["code_parcel"].sum()
    assert not (truth["parcel"] == 0).all()
    dataset.window = 122
    assert truth_per_sample(dataset, netcdf / "truth" / "truth.csv") is None


def test_truth_per_sample_rejects_the_old_table(tmp_path):
    from types import SimpleNamespace

    from cropseg.split.labels import load_label_set
    from cropseg.selection.selector import TRUTH_COLUMNS, truth_per_sample
    from cropseg.fetch.synthetic_files import TRUTH_COLUMNS as WRITTEN

    assert TRUTH_COLUMNS == WRITTEN
    old = tmp_path / "truth.csv"
    old.write_text("path,window_y,window_x,parcel_pixels,noisy_pixels\n2019/31TCG/a.nc,0,0,10,2\n")
    dataset = SimpleNamespace(records=[{"path": "2019/31TCG/a.nc"}], per_patch=1, sub_x=1, window=61,
                              label_set=load_label_set("s4a11", REPO / "configs" / "labels"))
    with pytest.raises(ValueError, match=r"truth\.csv: expected the columns path, window_y, window_x, "
                                         r"label_code, clean_code, pixels, got .*parcel_pixels"):
        truth_per_sample(dataset, old)
