"""Class weights, the parcel NLL and the gradient-accumulation identity."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cropseg.nn.loss import class_weights, parcel_nll, per_sample_loss, pixel_weight_sum
from cropseg.nn.models import build_model


def batch_loss(weighted_sum: torch.Tensor, weight_sum: torch.Tensor | float) -> torch.Tensor:
    """``weighted_sum.sum() / total``, where ``weight_sum`` is per-sample (summed here) or the
    total weight of the whole accumulated batch; 0 (with a gradient) when the total is 0: the
    batch loss as the training loop forms it (``cropseg.train.loop``), to compare with ``F.nll_loss``."""
    total = weight_sum.sum() if isinstance(weight_sum, torch.Tensor) else torch.tensor(float(weight_sum))
    total = total.to(weighted_sum.device)
    return weighted_sum.sum() / total.clamp_min(torch.finfo(torch.float32).tiny)


def test_class_weights_known_table():
    counts = [1000, 50, 30, 20, 0]  # background, three seen classes, one unseen
    w = class_weights(counts, 1.0)
    # K = 4 non-background classes, freq = .5 .3 .2 (0 for the unseen one)
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), [0, 1 / (4 * 0.5), 1 / (4 * 0.3), 1 / (4 * 0.2), 1], rtol=1e-6)
    w = class_weights(counts, 0.1)
    np.testing.assert_allclose(w.numpy(), [0, 0.9 + 0.05, 0.9 + 0.1 / 1.2, 0.9 + 0.1 / 0.8, 1], rtol=1e-6)
    np.testing.assert_allclose(class_weights(counts, 0.0).numpy(), [0, 1, 1, 1, 1])
    np.testing.assert_allclose(class_weights(counts, 1.0, weighted=False).numpy(), [0, 1, 1, 1, 1])
    np.testing.assert_allclose(class_weights([7, 10, 10], 1.0).numpy(), [0, 1, 1])  # balanced -> 1
    with pytest.raises(ValueError):
        class_weights(counts, 1.5)


def _random_batch(n=3, c=5, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    log_probs = torch.randn(n, c, h, w, generator=g).log_softmax(1)
    target = torch.randint(0, c, (n, h, w), generator=g)
    return log_probs, target


def test_parcel_nll_matches_torch_nll_loss():
    log_probs, target = _random_batch()
    weights = class_weights([100, 5, 20, 40, 1], 0.7)
    weighted_sum, weight_sum = parcel_nll(log_probs, target, weights)
    assert weighted_sum.shape == weight_sum.shape == (3,)
    ref = F.nll_loss(log_probs, target, weight=weights, ignore_index=0)
    torch.testing.assert_close(batch_loss(weighted_sum, weight_sum), ref)
    torch.testing.assert_close(weight_sum, pixel_weight_sum(target, weights))
    for i in range(3):  # per sample too
        ref_i = F.nll_loss(log_probs[i : i + 1], target[i : i + 1], weight=weights, ignore_index=0)
        torch.testing.assert_close(per_sample_loss(log_probs, target, weights)[i], ref_i)


def test_background_is_ignored():
    log_probs, target = _random_batch(seed=1)
    weights = torch.ones(5)  # even with a non-zero background weight
    base = parcel_nll(log_probs, target, weights)
    changed = log_probs.clone()
    changed[(target == 0).unsqueeze(1).expand_as(changed)] = -50.0  # wreck background pixels
    changed[:, 0] = -50.0  # and the background class everywhere
    again = parcel_nll(changed, target, weights)
    torch.testing.assert_close(base[0], again[0])
    torch.testing.assert_close(base[1], (target > 0).flatten(1).sum(1).float())
    empty = torch.zeros_like(target)
    assert torch.isnan(per_sample_loss(log_probs, empty, weights)).all()
    assert torch.isposinf(per_sample_loss(log_probs, empty, weights, empty=float("inf"))).all()
    assert batch_loss(*parcel_nll(log_probs, empty, weights)).item() == 0.0


def test_float32_under_bf16_autocast():
    log_probs, target = _random_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ws, wsum = parcel_nll(log_probs.bfloat16(), target, class_weights([1, 1, 2, 3, 4], 1.0))
    assert ws.dtype == wsum.dtype == torch.float32


def test_accumulation_equals_one_big_batch():
    torch.manual_seed(0)
    model = build_model("convstar", bands=2, months=3, n_classes=4, width=4, depth=1)
    x = torch.randn(6, 3, 2, 8, 8)
    target = torch.randint(0, 4, (6, 8, 8))
    target[2] = 0  # a sample without parcel pixels
    weights = class_weights([10, 3, 5, 9], 0.5)

    model.zero_grad()
    F.nll_loss(model(x), target, weight=weights, ignore_index=0).backward()
    big = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    total = pixel_weight_sum(target, weights).sum()  # known before any forward pass
    for part in (slice(0, 2), slice(2, 3), slice(3, 6)):  # uneven micro-batches
        weighted_sum, _ = parcel_nll(model(x[part]), target[part], weights)
        batch_loss(weighted_sum, total).backward()
    for g_big, p in zip(big, model.parameters()):
        torch.testing.assert_close(p.grad, g_big, rtol=1e-5, atol=1e-7)
    assert not any(math.isnan(float(p.grad.abs().sum())) for p in model.parameters())
