"""The comparison protocol's per-sample label noise: share, determinism, model-class space, split."""

import numpy as np
import pytest
import torch

from cropseg.nn.dataset import SubPatchDataset
from cropseg.nn.label_noise import LabelNoise, relabel, sample_keys
from cropseg.split.labels import load_label_set

LABELS = load_label_set("s4a11")


def test_shifts_hit_the_requested_share_and_never_the_clean_class():
    keys = sample_keys([f"2019/31TCG/patch_{i}.nc" for i in range(400)], 36)
    shift = LabelNoise(0.4, 0, 11).shifts(keys)
    assert abs((shift > 0).mean() - 0.4) < 0.01
    assert set(np.unique(shift[shift > 0])) == set(range(1, 10))  # every wrong class reachable, never the true
    classes = np.arange(11)
    for step in range(1, 10):
        moved = relabel(classes, step, 11)
        assert moved[0] == 0 and (moved[1:] != classes[1:]).all() and sorted(moved[1:]) == list(range(1, 11))


def test_the_draw_depends_on_seed_and_sample_not_on_order_or_split():
    paths = [f"2020/31TCJ/p{i}.nc" for i in range(50)]
    noise = LabelNoise(0.3, 7, 11)
    whole = noise.shifts(sample_keys(paths, 36)).reshape(50, 36)
    part = noise.shifts(sample_keys(paths[10:20][::-1], 36)).reshape(10, 36)
    assert (part == whole[10:20][::-1]).all()  # a patch keeps its noise in any list, in any order
    other = LabelNoise(0.3, 8, 11).shifts(sample_keys(paths, 36)).reshape(50, 36)
    assert (other > 0).mean() == pytest.approx(0.3, abs=0.05) and not (other == whole).all()


def test_too_few_crop_classes_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 crop classes"):
        LabelNoise(0.2, 0, 2)
    LabelNoise(0.0, 0, 2)  # no noise asked: any label set


def test_dataset_relabels_noisy_samples_and_counts_classes_as_labelled(medians_store):
    root, relpaths = medians_store
    clean = SubPatchDataset(root, relpaths, LABELS, months=[4, 9], normalize=1e4, skip_empty=False)
    noisy = SubPatchDataset(root, relpaths, LABELS, months=[4, 9], normalize=1e4, skip_empty=False,
                            noise=LabelNoise(0.5, 3, LABELS.n_classes))
    positions = np.arange(len(clean))
    a, b = clean[positions], noisy[positions]
    shift = noisy.noise_shift[b.index.numpy()]
    flagged = torch.from_numpy(shift > 0)
    assert 0 < flagged.float().mean() < 1
    parcel = a.y > 0
    assert torch.equal(b.y[~flagged], a.y[~flagged])  # clean samples untouched
    assert torch.equal(b.y[flagged] > 0, parcel[flagged])  # background stays background
    assert not (b.y[flagged] == a.y[flagged])[parcel[flagged]].any()  # every parcel pixel of a noisy sample wrong
    # class counts from the store index follow the labels the model gets
    counted = noisy.class_pixel_counts()
    direct = torch.bincount(b.y.flatten(), minlength=LABELS.n_classes).numpy()
    assert (counted[1:] == direct[1:]).all()
    assert (clean.parcel_pixels == noisy.parcel_pixels).all()


@pytest.fixture(scope="module")
def medians_store(tmp_path_factory):
    from cropseg.fetch.stage import fetch_s4a
    from cropseg.medians.stage import run_medians
    from cropseg.core.params import Medians

    from conftest import tiny_data

    tmp = tmp_path_factory.mktemp("noise")
    fetch_s4a(tiny_data(patches=4, patch_size=122), tmp / "netcdf", workers=1)
    run_medians(tmp / "netcdf", tmp / "medians", Medians(workers=1))
    relpaths = sorted(str(p.relative_to(tmp / "netcdf")) for p in (tmp / "netcdf").rglob("*.nc"))
    return tmp / "medians", relpaths
