"""Streaming segmentation metrics on parcel pixels (label 0 = background is ignored).

A :class:`ConfusionMatrix` is accumulated on the device with ``torch.bincount`` (rows = truth,
columns = prediction, like ``sklearn.metrics.confusion_matrix``), summed across processes by
:meth:`ConfusionMatrix.sync` under ``torch.distributed``, and turned into scores by
:func:`scores_from_confusion`, which follows scikit-learn's defaults exactly: macro averages over
the classes present in truth or prediction, weighted averages by support, 0 for undefined
precision/recall/F1 (``zero_division`` left at its default).

The ``crop5`` variant scores the centre of each sub-patch with a 5-pixel border removed:
:func:`crop_border` on predictions and targets, or :func:`border_mask` as ``mask``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def crop_border(tensor: torch.Tensor, border: int = 5) -> torch.Tensor:
    """``tensor[..., border:-border, border:-border]`` (a view): the centre of the last two dims.

    Raises:
        ValueError: ``border`` is negative or leaves no pixel.
    """
    if border == 0:
        return tensor
    h, w = tensor.shape[-2:]
    if border < 0 or 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves nothing of a {h}x{w} image")
    return tensor[..., border : h - border, border : w - border]


def border_mask(height: int, width: int, border: int = 5, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool ``(height, width)`` mask, True on the centre (a ``border``-pixel frame removed)."""
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    crop_border(mask, border).fill_(True)
    return mask


def _valid_pairs(pred: torch.Tensor, target: torch.Tensor, n_classes: int, mask: torch.Tensor | None):
    if pred.is_floating_point():  # scores / log-probabilities (N, C, H, W) -> classes
        if pred.dim() != target.dim() + 1:
            raise ValueError(f"float pred must have a class dim: pred {tuple(pred.shape)}, target {tuple(target.shape)}")
        pred = pred.argmax(1)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    target = target.long()
    pred = pred.long()
    valid = (target > 0) & (target < n_classes)
    if mask is not None:
        valid &= mask.to(device=target.device, dtype=torch.bool).expand_as(target)
    # checked on CPU only: on an accelerator it would cost a device sync per batch
    if pred.device.type == "cpu" and bool(((pred < 0) | (pred >= n_classes))[valid].any()):
        raise ValueError(f"predictions outside 0..{n_classes - 1}")
    return pred, target, valid


def confusion_counts(
    pred: torch.Tensor, target: torch.Tensor, n_classes: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(n_classes, n_classes)`` int64 counts (rows truth, columns prediction) of one batch.

    ``pred``: class indices shaped like ``target`` (or log-probabilities ``(N, C, ...)``, argmax
    taken). Pixels with target 0 and, if given, where ``mask`` (broadcast to ``target``) is False
    are left out. Prediction 0 (background) counts, as a wrong prediction.

    Args:
        pred: as above.
        target: model classes; values at or above ``n_classes`` are left out like 0.
        n_classes: model classes, background included.
        mask: where to score, broadcast to ``target``; everywhere when None.

    Raises:
        ValueError: ``pred`` and ``target`` shapes do not match, or (checked on the CPU only) a
            scored prediction is outside ``0..n_classes - 1``.
    """
    pred, target, valid = _valid_pairs(pred, target, n_classes, mask)
    idx = target[valid] * n_classes + pred[valid]
    return torch.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_sample_confusion(
    pred: torch.Tensor, target: torch.Tensor, n_classes: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(N, n_classes, n_classes)``: :func:`confusion_counts` of each sample, in one bincount.

    Summed over N it equals the batch's :func:`confusion_counts` (per-patch scores add up to the
    global ones). Arguments and errors as :func:`confusion_counts`; dim 0 is the sample.
    """
    pred, target, valid = _valid_pairs(pred, target, n_classes, mask)
    n = target.shape[0]
    sample = torch.arange(n, device=target.device).view(-1, *([1] * (target.dim() - 1))).expand_as(target)
    idx = (sample * n_classes + target) * n_classes + pred
    counts = torch.bincount(idx[valid], minlength=n * n_classes * n_classes)
    return counts.reshape(n, n_classes, n_classes)


def scores_from_confusion(matrix: torch.Tensor | np.ndarray) -> dict[str, Any]:
    """Scores of a confusion matrix (rows truth, columns prediction), as scikit-learn computes them.

    Returns ``accuracy``, ``weighted_f1``, ``macro_f1`` (floats; NaN when the matrix is empty),
    ``n_pixels`` (int), per-class ``precision``, ``recall``, ``f1`` (float64 arrays, 0 where
    undefined), ``support`` (int64 array) and ``matrix`` (int64 array), indexed by model class.
    ``present`` (bool array) marks the classes in truth or prediction, over which ``macro_f1``
    averages.
    """
    m = torch.as_tensor(matrix).detach().to("cpu", torch.float64).numpy()
    tp = np.diag(m)
    support = m.sum(1)
    predicted = m.sum(0)
    total = m.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    present = (support > 0) | (predicted > 0)
    nan = float("nan")
    return {
        "accuracy": float(tp.sum() / total) if total else nan,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if total else nan,
        "macro_f1": float(f1[present].mean()) if present.any() else nan,
        "n_pixels": int(total),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
        "present": present,
        "matrix": m.astype(np.int64),
    }


class ConfusionMatrix:
    """A confusion matrix over model classes, accumulated on ``device`` batch after batch.

    ``update`` adds a batch; ``sync`` sums the matrices of all processes (once, after the last
    update; a no-op without an initialised process group); ``compute`` returns
    :func:`scores_from_confusion` of the matrix.
    """

    def __init__(self, n_classes: int, device: torch.device | str = "cpu") -> None:
        """An all-zero matrix.

        Args:
            n_classes: model classes, background included.
            device: where the matrix lives; batches are moved there.

        Raises:
            ValueError: ``n_classes`` is below 2.
        """
        if n_classes < 2:
            raise ValueError(f"need background and at least one class, got n_classes={n_classes}")
        self.n_classes = n_classes
        self.device = torch.device(device)
        self.matrix = torch.zeros(n_classes, n_classes, dtype=torch.int64, device=self.device)
        self._synced = False

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add a batch: see :func:`confusion_counts` for ``pred``, ``target`` and ``mask``.

        Raises:
            RuntimeError: the matrix was synced already (a new pass needs a new matrix).
            ValueError: as :func:`confusion_counts`.
        """
        if self._synced:
            raise RuntimeError("ConfusionMatrix.update after sync(): use a new matrix")
        self.matrix += confusion_counts(pred.to(self.device), target.to(self.device), self.n_classes, mask)

    def sync(self) -> None:
        """All-reduce (sum) the matrix across processes under ``torch.distributed``; once."""
        if self._synced or not (dist.is_available() and dist.is_initialized()):
            return
        dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        self._synced = True

    def compute(self) -> dict[str, Any]:
        return scores_from_confusion(self.matrix)
