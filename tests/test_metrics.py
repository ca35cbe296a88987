"""Confusion-matrix metrics against scikit-learn, the border crop, per-sample sums, DDP sync."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from cropseg.nn.metrics import (
    ConfusionMatrix,
    border_mask,
    confusion_counts,
    crop_border,
    per_sample_confusion,
    scores_from_confusion,
)

C = 6


def _sklearn(pred, target):
    keep = target > 0
    y, p = target[keep].numpy(), pred[keep].numpy()
    labels = np.arange(C)
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    return {
        "accuracy": accuracy_score(y, p),
        "weighted_f1": f1_score(y, p, average="weighted"),
        "macro_f1": f1_score(y, p, average="macro"),  # labels present in y or p, like ours
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "support": sup,
        "matrix": confusion_matrix(y, p, labels=labels),
    }


def _check(ours, ref):
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose(ours[key], ref[key], atol=1e-12, err_msg=key)
    np.testing.assert_array_equal(ours["support"], ref["support"])
    np.testing.assert_array_equal(ours["matrix"], ref["matrix"])


def _random(seed, n=4, size=20, ignored=0.3, skew=True):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(1, C, (n, size, size), generator=g)
    target[torch.rand(n, size, size, generator=g) < ignored] = 0
    pred = torch.where(torch.rand(n, size, size, generator=g) < 0.6, target, torch.randint(0, C, (n, size, size), generator=g))
    if skew:  # class 3 never predicted, 5 never true, 4 in neither: macro follows sklearn's label set
        pred[pred == 3] = 2
        target[target == 5] = 1
        pred[pred == 4] = 1
        target[target == 4] = 2
    return pred, target


@pytest.mark.parametrize("ignored", [0.0, 0.4])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_sklearn(seed, ignored):
    pred, target = _random(seed, ignored=ignored)
    cm = ConfusionMatrix(C)
    for i in range(pred.shape[0]):  # streaming over batches
        cm.update(pred[i : i + 1], target[i : i + 1])
    _check(cm.compute(), _sklearn(pred, target))


def test_border_crop_matches_sklearn():
    pred, target = _random(3, size=21)
    cropped = ConfusionMatrix(C)
    cropped.update(crop_border(pred, 5), crop_border(target, 5))
    _check(cropped.compute(), _sklearn(crop_border(pred, 5), crop_border(target, 5)))
    masked = ConfusionMatrix(C)
    masked.update(pred, target, mask=border_mask(21, 21, 5))
    np.testing.assert_array_equal(masked.compute()["matrix"], cropped.compute()["matrix"])
    assert crop_border(pred, 5).shape[-2:] == (11, 11)


def test_log_prob_input_takes_argmax():
    pred, target = _random(4)
    log_probs = torch.nn.functional.one_hot(pred, C).permute(0, 3, 1, 2).float().log_softmax(1)
    torch.testing.assert_close(confusion_counts(log_probs, target, C), confusion_counts(pred, target, C))


def test_orientation_rows_truth_columns_prediction():
    target = torch.tensor([[1, 1, 1, 2, 0]])
    pred = torch.tensor([[1, 2, 2, 2, 1]])  # last pixel is background: ignored
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    out = cm.compute()
    np.testing.assert_array_equal(out["matrix"], [[0, 0, 0], [0, 1, 2], [0, 0, 1]])
    np.testing.assert_allclose(out["recall"], [0, 1 / 3, 1])
    np.testing.assert_allclose(out["precision"], [0, 1, 1 / 3])
    assert out["n_pixels"] == 4 and out["accuracy"] == 0.5


def test_per_sample_sums_to_global():
    pred, target = _random(5)
    mask = border_mask(20, 20, 5)
    per = per_sample_confusion(pred, target, C, mask)
    torch.testing.assert_close(per.sum(0), confusion_counts(pred, target, C, mask))
    torch.testing.assert_close(per[1], confusion_counts(pred[1:2], target[1:2], C, mask))
    assert np.isnan(scores_from_confusion(torch.zeros(C, C))["accuracy"])


def test_sync_single_process_group(tmp_path):
    import torch.distributed as dist

    pred, target = _random(6)
    cm = ConfusionMatrix(C)
    cm.update(pred, target)
    before = cm.matrix.clone()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cm.sync()
        cm.sync()  # once only
        torch.testing.assert_close(cm.matrix, before)
        with pytest.raises(RuntimeError):
            cm.update(pred, target)
    finally:
        dist.destroy_process_group()


def _sync_worker(rank, store, result):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        pred, target = _random(7)
        cm = ConfusionMatrix(C)
        cm.update(pred[rank::2], target[rank::2])  # each process sees half the batch
        cm.sync()
        if rank == 0:
            torch.save(cm.matrix, result)
    finally:
        dist.destroy_process_group()


def test_sync_sums_two_processes(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_sync_worker, args=(str(tmp_path / "store"), str(tmp_path / "m.pt")), nprocs=2)
    pred, target = _random(7)
    torch.testing.assert_close(torch.load(tmp_path / "m.pt"), confusion_counts(pred, target, C))
