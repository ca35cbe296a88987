"""Class-weighted NLL over parcel pixels (label 0 = background is ignored).

The loss of a batch is ``sum(weighted_sum) / sum(weight_sum)`` over every sample of the whole
(accumulated) batch, where :func:`parcel_nll` returns both sums per sample. This equals
``F.nll_loss(log_probs, target, weight=weights, ignore_index=0)`` on the whole batch, and since
``weight_sum`` depends on the targets only (:func:`pixel_weight_sum`), gradient accumulation
divides every micro-batch's ``weighted_sum.sum()`` by the batch's total weight, known before the
first forward pass: the accumulated gradient is then exactly the gradient of one big batch.
Data selection ranks samples by :func:`per_sample_loss`, the same sums divided per sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def class_weights(pixel_counts: Any, weight: float, *, weighted: bool = True) -> torch.Tensor:
    """Per-class loss weights (float32, one per model class, background included).

    ``pixel_counts``: training pixels of each model class, entry 0 = background. With
    ``K`` non-background classes and ``freq_c = count_c / sum(count_1..K)``,
    ``w_c = 1 / (K * freq_c)`` (1 for every class when balanced), interpolated towards uniform:
    ``(1 - weight) * 1 + weight * w_c``. Background always gets 0. A class with zero count (it
    cannot contribute to the loss anyway, but may appear in validation) gets weight 1.
    ``weighted=False`` (``loss.weighted: false``) gives 1 for every class but background.

    Args:
        pixel_counts: as above, one entry per model class.
        weight: the interpolation towards inverse frequency, 0 (uniform) .. 1 (``loss.class_weight``).
        weighted: ``loss.weighted``.

    Raises:
        ValueError: ``pixel_counts`` is not 1-D with at least two entries, is negative or not
            finite, or ``weight`` is outside [0, 1].
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"pixel_counts must be 1-D over model classes incl. background, got shape {counts.shape}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("pixel_counts must be finite and non-negative")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"class weight interpolation must be in [0, 1], got {weight}")
    fg = counts[1:]
    w = np.ones_like(fg)
    if weighted and fg.sum() > 0:
        seen = fg > 0
        freq = fg[seen] / fg.sum()
        w[seen] = (1.0 - weight) + weight / (fg.size * freq)
    return torch.as_tensor(np.concatenate([[0.0], w]), dtype=torch.float32)


def _pixel_weights(target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weight of every pixel: ``weights[target]``, and 0 where target is 0 (background)."""
    w = weights.to(device=target.device, dtype=torch.float32)[target]
    return w.masked_fill(target == 0, 0.0)


def pixel_weight_sum(target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of pixel weights ``[N]`` (float32): the denominators, without a forward pass."""
    return _pixel_weights(target, weights).flatten(1).sum(1)


def parcel_nll(log_probs: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(weighted_sum [N], weight_sum [N])`` of the NLL over parcel pixels, float32.

    ``log_probs`` ``(N, C, H, W)``, ``target`` ``(N, H, W)`` int64 model classes, ``weights``
    ``(C,)`` (from :func:`class_weights`). Pixels with label 0 are ignored whatever
    ``weights[0]`` is. Computed in float32 even under bf16 or fp16 autocast.
    """
    device_type = log_probs.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        target = target.long()
        w = _pixel_weights(target, weights)
        picked = log_probs.float().gather(1, target.unsqueeze(1)).squeeze(1)
        weighted_sum = -(w * picked).flatten(1).sum(1)
        return weighted_sum, w.flatten(1).sum(1)


def per_sample_loss(log_probs: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, *,
                    empty: float = float("nan")) -> torch.Tensor:
    """Per-sample mean weighted NLL ``[N]`` (float32): the one per-sample loss data selection uses.

    A sample without weighted parcel pixels (every pixel background, or of zero-weight classes)
    has no loss; it gets ``empty``, so that each caller decides how such samples rank: NaN (the
    selector's scores, which rank them lowest) or ``+inf`` (the stored holdout losses, which
    ``rho_loss`` subtracts).

    Args:
        log_probs: ``(N, C, H, W)`` log-probabilities (any float dtype; computed in float32).
        target: ``(N, H, W)`` model classes, 0 = background.
        weights: ``(C,)`` class weights (:func:`class_weights`).
        empty: the value of a sample whose pixel weights sum to 0.

    Returns:
        ``weighted_sum / weight_sum`` of :func:`parcel_nll` per sample, ``empty`` where the sum is 0.
    """
    weighted_sum, weight_sum = parcel_nll(log_probs, target, weights)
    fill = torch.full_like(weighted_sum, empty)
    return torch.where(weight_sum > 0, weighted_sum / weight_sum.clamp_min(torch.finfo(torch.float32).tiny), fill)
