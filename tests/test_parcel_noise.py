"""Per-parcel declaration noise: share, parcel granularity, similar crops, systematic errors, splits."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cropseg.core.params import Protocol, Systematic
from cropseg.nn.dataset import SubPatchDataset
from cropseg.nn.noise import protocol_noise
from cropseg.nn.parcel_noise import ParcelNoise, ParcelNoiseError, read_parcels
from cropseg.split.labels import load_label_set

from test_label_noise import medians_store  # noqa: F401  (the module's tiny store, 4 patches of 122 px)

REPO = Path(__file__).resolve().parents[1]

LABELS = load_label_set("s4a11")
NAMES = LABELS.class_names


def _noise(root, **protocol) -> ParcelNoise:
    return protocol_noise(Protocol(noise_unit="parcel", **protocol), LABELS, root)


def test_a_share_of_parcels_gets_a_wrong_class_of_its_similar_group():
    noise = ParcelNoise.from_protocol(Protocol(label_noise=0.2, noise_unit="parcel", noise_classes="similar"),
                                      NAMES, "unused")
    ids = np.arange(1, 20001)
    classes = np.resize(np.arange(1, LABELS.n_classes), ids.size)
    declared = noise.parcel_classes("2019/31TCG/2019_31TCG_patch_00_00.nc", ids, classes)
    wrong = declared != classes
    assert wrong.mean() == pytest.approx(0.2, abs=0.01)
    groups = {c: g for g in noise.groups for c in g}
    assert groups[NAMES.index("wheat")] == tuple(NAMES.index(n) for n in ("wheat", "barley", "rye", "oats"))
    for true, new in zip(classes[wrong], declared[wrong]):
        assert new != true and new > 0
        assert new in groups[true] if true in groups else True  # grapes (in no group): any other crop
    grapes = NAMES.index("grapes")
    assert len(set(declared[wrong & (classes == grapes)])) > 4  # any other crop reachable
    # no parcel (id 0) and background (class 0) are never changed
    untouched = noise.parcel_classes("p.nc", np.array([0, 0, 5, 6]), np.array([3, 0, 0, 0]))
    assert untouched.tolist() == [3, 0, 0, 0]


def test_systematic_error_acts_in_its_region_only():
    rule = Systematic.model_validate({"from": "barley", "to": "wheat", "tiles": ["31TCG"]})
    noise = ParcelNoise.from_protocol(Protocol(noise_unit="parcel", systematic=rule), NAMES, "unused")
    ids, barley = np.arange(1, 101), np.full(100, NAMES.index("barley"))
    inside = noise.parcel_classes("2019/31TCG/2019_31TCG_patch_00_00.nc", ids, barley)
    outside = noise.parcel_classes("2019/31TDF/2019_31TDF_patch_00_00.nc", ids, barley)
    assert (inside == NAMES.index("wheat")).all() and (outside == barley).all()
    with pytest.raises(ParcelNoiseError, match="systematic.from: class 'teff'"):
        ParcelNoise.from_protocol(Protocol(noise_unit="parcel", systematic=Systematic.model_validate(
            {"from": "teff", "to": "wheat"})), NAMES, "unused")
    with pytest.raises(ValueError, match="needs noise_unit: parcel"):
        Protocol(noise_classes="similar")


def test_dataset_noises_whole_parcels_consistently_and_counts_them(medians_store, tmp_path):  # noqa: F811
    root, relpaths = medians_store
    netcdf = root.parent / "netcdf"
    kwargs = dict(months=[4, 9], normalize=1e4, skip_empty=False)
    clean = SubPatchDataset(root, relpaths, LABELS, **kwargs)
    noise = _noise(netcdf, label_noise=0.3, noise_seed=4)
    noisy = SubPatchDataset(root, relpaths, LABELS, noise=noise, **kwargs)
    positions = np.arange(len(clean))
    a, b = clean[positions], noisy[positions]
    changed = a.y != b.y
    assert torch.equal(a.y > 0, b.y > 0)  # background stays background
    assert 0 < changed.float().mean() < 0.6
    # parcel granularity: every changed parcel is changed on all its pixels, in every sub-patch it crosses
    per = noisy.per_patch
    side = noisy.sub_y * noisy.window
    for p, path in enumerate(relpaths):
        parcels = read_parcels(netcdf / path)
        w = noisy.window
        noisy_full = b.y[p * per:(p + 1) * per].reshape(noisy.sub_y, noisy.sub_x, w, w).permute(0, 2, 1, 3)
        changed_full = changed[p * per:(p + 1) * per].reshape(noisy.sub_y, noisy.sub_x, w, w).permute(0, 2, 1, 3)
        noisy_full, changed_full = noisy_full.reshape(side, side).numpy(), changed_full.reshape(side, side).numpy()
        for parcel in np.unique(parcels[changed_full]):
            inside = parcels == parcel
            assert changed_full[inside].all() and len(np.unique(noisy_full[inside])) == 1
    # the truth: noisy pixels per sample, and class counts of the labels the model gets
    assert (noisy.noisy_pixels == changed.flatten(1).sum(1).numpy()).all()
    direct = torch.bincount(b.y.flatten(), minlength=LABELS.n_classes).numpy()
    assert (noisy.class_pixel_counts()[1:] == direct[1:]).all()
    # the same draw in any list and order; clean_paths keep their labels
    part = SubPatchDataset(root, relpaths[::-1], LABELS, noise=noise, **kwargs)
    assert torch.equal(part[np.arange(per)].y, b.y[(len(relpaths) - 1) * per:])
    held = SubPatchDataset(root, relpaths, LABELS, noise=noise, clean_paths=frozenset(relpaths[:2]), **kwargs)
    c = held[positions]
    assert torch.equal(c.y[:2 * per], a.y[:2 * per]) and torch.equal(c.y[2 * per:], b.y[2 * per:])


def _split(tmp_path, relpaths):
    """data/split as the split stage writes it: train / val, and holdout/ with the roles swapped."""
    split = tmp_path / "split"
    (split / "holdout").mkdir(parents=True)
    for folder, train, val in ((split, relpaths[:2], relpaths[2:]), (split / "holdout", relpaths[2:], relpaths[:2])):
        (folder / "train.txt").write_text("\n".join(train) + "\n")
        (folder / "val.txt").write_text("\n".join(val) + "\n")
    return split


def _stage_sets(root, split, stage, **protocol):
    from cropseg.core.params import parse_params
    from cropseg.train.loop import RunPaths, stage_datasets

    from tiny_pipeline import tiny_params

    params = parse_params(tiny_params(protocol=protocol))
    paths = RunPaths(split_dir=split, model_out=split / "m.pt", metrics_dir=split / "metrics",
                     checkpoint_dir=split / "ck", medians=root, netcdf=root.parent / "netcdf")
    return stage_datasets(params, stage, paths, LABELS)


def _changed(dataset) -> int:
    return 0 if dataset.noisy_pixels is None else int(dataset.noisy_pixels.sum())


@pytest.mark.parametrize("unit", ["sample", "parcel"])
def test_noisy_val_noises_the_irreducible_loss_models_training_labels(medians_store, tmp_path, unit):  # noqa: F811
    root, relpaths = medians_store
    split = _split(tmp_path, relpaths)
    noise = dict(label_noise=0.4, noise_unit=unit, noise_seed=1)
    holdout_train, holdout_val = _stage_sets(root, split / "holdout", "holdout", **noise)  # trains on val
    assert _changed(holdout_train) == 0 and _changed(holdout_val) > 0  # default: a clean holdout
    noisy_train, _ = _stage_sets(root, split / "holdout", "holdout", noisy_val=True, **noise)
    assert _changed(noisy_train) > 0
    assert not torch.equal(noisy_train[np.arange(len(noisy_train))].y, holdout_train[np.arange(len(holdout_train))].y)
    # the target model: train.txt noised; with train_on_holdout val's patches join it, clean unless noisy_val
    target, _ = _stage_sets(root, split, "train", **noise)
    union, _ = _stage_sets(root, split, "train", train_on_holdout=True, **noise)
    assert len(union.records) == 4 and _changed(union) == _changed(target)
    noisy_union, _ = _stage_sets(root, split, "train", train_on_holdout=True, noisy_val=True, **noise)
    assert _changed(noisy_union) == _changed(target) + _changed(noisy_train)


def test_the_il_filter_drops_the_samples_with_the_highest_irreducible_loss(medians_store, tmp_path):  # noqa: F811
    from cropseg.train.loop import drop_least_learnable

    root, relpaths = medians_store
    dataset = SubPatchDataset(root, relpaths, LABELS, months=[4, 9], normalize=1e4, skip_empty=True)
    losses = np.random.default_rng(0).random(len(relpaths) * dataset.per_patch).astype(np.float32)
    (tmp_path / "losses.npy").write_bytes(b"")
    np.save(tmp_path / "losses.npy", losses)
    before = dataset.indices.copy()
    dropped = drop_least_learnable(dataset, tmp_path, 0.25)
    assert dropped == round(0.25 * len(before)) and len(dataset) == len(before) - dropped
    kept, gone = losses[dataset.indices], losses[np.setdiff1d(before, dataset.indices)]
    assert kept.max() < gone.min() and (np.diff(dataset.indices) > 0).all()
    with pytest.raises(ValueError, match="run the irreducible_loss stage"):
        drop_least_learnable(dataset, tmp_path / "missing", 0.1)


def test_the_test_split_is_never_noised():
    """Noise reaches datasets in exactly two places, both reading train/val lists; evaluate (the test
    split) takes neither params.protocol nor a noise, and DVC does not rerun it for a protocol change."""
    import inspect
    import re

    import yaml

    from cropseg.evaluate.stage import evaluate

    src = REPO / "src" / "cropseg"
    noised = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                    if re.search(r"\bnoise=(?!None)", p.read_text()) and p.name != "dataset.py")
    assert noised == ["selection/irreducible.py", "train/loop.py"]
    assert "test.txt" not in (src / "train" / "loop.py").read_text()
    assert not {"noise", "protocol", "params"} & set(inspect.signature(evaluate).parameters)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert not [p for p in stages["evaluate"]["params"] if str(p).startswith("protocol")]
