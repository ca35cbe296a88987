"""Precise BN: population statistics recomputed exactly, batch-independent predictions, scoring
with batch statistics leaves the population statistics alone, and a trained model file carries them."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cropseg.nn.checkpoint import load_model
from cropseg.nn.dataset import Batch
from cropseg.nn.models import build_model
from cropseg.nn.precision import FP32
from cropseg.nn.precise_bn import batch_statistics, calibration_positions, population_norms, recalibrate

SMALL = {"bands": 3, "months": 4, "n_classes": 5, "width": 4, "depth": 2}


class _Samples:
    """A dataset of random sub-patches with the ``dataset[positions] -> Batch`` contract."""

    def __init__(self, n: int, size: int = 12, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 4, 3, size, size, generator=g) * torch.linspace(0.5, 2.0, n).view(n, 1, 1, 1, 1)
        self.y = torch.randint(0, 5, (n, size, size), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, positions) -> Batch:
        rows = torch.as_tensor(np.asarray(positions, dtype=np.int64))
        return Batch(rows, self.x[rows], self.y[rows])


def _trained(norm: str, data: _Samples) -> torch.nn.Module:
    """A model after a few optimiser steps, so its running statistics lag its weights."""
    torch.manual_seed(0)
    model = build_model("unet", **SMALL, norm=norm)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for start in range(0, len(data), 8):
        batch = data[np.arange(start, min(start + 8, len(data)))]
        optimizer.zero_grad()
        torch.nn.functional.nll_loss(model(batch.x), batch.y).backward()
        optimizer.step()
    return model


def test_recalibrate_sets_the_average_of_the_calibration_batch_statistics():
    data = _Samples(24)
    model = _trained("precise", data)
    positions = calibration_positions(len(data), 12, seed=3)
    assert np.array_equal(positions, calibration_positions(len(data), 12, seed=3))  # fixed sample
    assert len(set(positions.tolist())) == 12 and np.all(np.diff(positions) > 0)
    first_bn = model.inc[1]
    momentum = first_bn.momentum
    model.eval()
    assert recalibrate(model, data, positions, batch_size=5, device=torch.device("cpu"), precision=FP32) == 3
    # by hand: the first BatchNorm sees the first conv's output; equal-weight average of 3 batches (5, 5, 2)
    with torch.no_grad():
        feats = [model.inc[0](data[positions[s:s + 5]].x.flatten(1, 2)) for s in range(0, 12, 5)]
    means = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    variances = torch.stack([f.var((0, 2, 3), unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(first_bn.running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(first_bn.running_var, variances, rtol=1e-5, atol=1e-6)
    assert first_bn.momentum == momentum and not model.training  # restored


def test_a_sub_patch_predicted_alone_equals_it_inside_a_mixed_batch():
    data = _Samples(24)
    model = _trained("precise", data)
    recalibrate(model, data, calibration_positions(len(data), 16, seed=0), batch_size=8,
                device=torch.device("cpu"), precision=FP32)
    model.eval()
    with torch.no_grad():
        alone = model(data[[5]].x)
        mixed = model(data[[17, 5, 0, 23, 9]].x)[1:2]
        other_mates = model(data[[5, 2, 3]].x)[0:1]
    torch.testing.assert_close(alone, mixed, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alone, other_mates, rtol=1e-5, atol=1e-5)


def test_batch_statistics_make_a_prediction_depend_on_its_batch_mates():
    # the opt-in model.norm: batch, and the reason it is not the default
    data = _Samples(24)
    model = _trained("batch", data).eval()
    assert population_norms(model) == []
    with torch.no_grad():
        alone = model(data[[5]].x)
        mixed = model(data[[17, 5, 0, 23, 9]].x)[1:2]
    assert (alone.exp() - mixed.exp()).abs().max() > 1e-3


def test_scoring_with_batch_statistics_leaves_population_statistics_untouched():
    data = _Samples(16)
    model = _trained("precise", data)
    recalibrate(model, data, np.arange(16), batch_size=8, device=torch.device("cpu"), precision=FP32)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = data[np.arange(6)]
    with torch.no_grad(), batch_statistics(model):
        scored = model(batch.x)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(m.training for m in model.modules())
    model.train()
    for bn in population_norms(model):
        bn.momentum = 0.0  # the same normalisation in plain train mode, statistics kept
    with torch.no_grad():
        torch.testing.assert_close(scored, model(batch.x))


def test_unknown_norm_is_rejected():
    with pytest.raises(ValueError, match="unknown norm 'group'"):
        build_model("unet", **SMALL, norm="group")


def test_old_model_files_load_as_batch_statistics(tmp_path: Path):
    # files written before model.norm existed have no running statistics and meant batch statistics
    model = build_model("unet", **SMALL, norm="batch")
    config = {k: v for k, v in model.config.items() if k != "norm"}
    torch.save({"format": "cropseg-model-1", "arch": "unet", "model": config, "state_dict": model.state_dict(),
                "labels": {}, "loader": {}, "metrics": {}, "epoch": 1}, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.config["norm"] == "batch" and population_norms(loaded) == []


def test_the_trained_model_file_holds_the_precise_statistics_of_its_weights(tmp_path: Path):
    from conftest import tiny_data

    from cropseg.nn.dataset import SubPatchDataset, read_split_list
    from cropseg.fetch.stage import fetch_s4a
    from cropseg.split.labels import load_label_set
    from cropseg.medians.stage import run_medians
    from cropseg.core.params import Medians, parse_params
    from cropseg.train.loop import RunPaths, train

    repo = Path(__file__).resolve().parents[1]
    fetch_s4a(tiny_data(patches=4, patch_size=122, acquisitions=14), tmp_path / "netcdf", workers=1)
    run_medians(tmp_path / "netcdf", tmp_path / "medians", Medians(workers=1), progress=False)
    patches = sorted(p.relative_to(tmp_path / "netcdf").as_posix() for p in (tmp_path / "netcdf").rglob("*.nc"))
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.txt").write_text("\n".join(patches[:3]) + "\n")
    (tmp_path / "split" / "val.txt").write_text(patches[3] + "\n")
    run = {"epochs": 2, "batch_size": 4, "physical_batch_size": 4, "precision": "32", "lr": 0.01,
           "allow_degenerate_split": True}  # 4 tiny patches lack some of the 11 classes
    params = parse_params({"model": {"arch": "unet", "width": 4, "depth": 2, "precise_bn_samples": 6},
                           "train": run, "tracking": {"wandb": "disabled"}, "loader": {"months": [3, 10]},
                           "selection": {"method": "uniform", "block_size": 1}})
    train(params, "train", RunPaths(split_dir=tmp_path / "split", model_out=tmp_path / "model.pt",
                                    metrics_dir=tmp_path / "metrics", checkpoint_dir=tmp_path / "ckpt",
                                    medians=tmp_path / "medians", labels_dir=repo / "configs" / "labels"),
          progress=False)
    model, content = load_model(tmp_path / "model.pt")
    saved = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert saved and content["model"]["norm"] == "precise"
    dataset = SubPatchDataset(tmp_path / "medians", read_split_list(tmp_path / "split" / "train.txt"),
                              load_label_set("s4a11", repo / "configs" / "labels"), months=[3, 10], normalize=1e4,
                              skip_empty=True)
    recalibrate(model, dataset, calibration_positions(len(dataset), 6, seed=0), batch_size=4,
                device=torch.device("cpu"), precision=FP32)
    for key, value in saved.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
