"""Per-parcel decisions from a model's pixel probabilities, shared by the evaluate and predict stages.

Agencies check declarations parcel by parcel (the CAP's checks by monitoring), so the map's
natural product is one row per parcel: the declared class (the majority of its labels, mapped
through the label set), the predicted class and its confidence, and whether the model contradicts
the declaration with a confidence above a threshold (``suspect``).

The predicted class is the argmax of the parcel's **mean probability** (``method="mean"``), its
confidence that mean probability; ``method="majority"`` (the most frequent pixel class, its share
as confidence) is kept for the measurement in ``bench/parcels.py`` that chose the mean
(``docs/decisions.md``). Parcel id 0 is no parcel. A parcel declared as background (class 0: a code
outside the label set, or no declaration) is ``undeclared``: nothing to check, never suspect,
left out of parcel metrics.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

Method = Literal["mean", "majority"]
AGREEMENT = ("agree", "disagree", "suspect", "undeclared")
COLUMNS = ["parcel_id", "pixels", "declared", "declared_share", "predicted", "confidence", "agreement", "suspect"]
SUSPECT_THRESHOLD = 0.8  # bench/declarations.py: precision 0.60, recall 0.70 (docs/decisions.md)


def parcel_table(parcels: np.ndarray, declared: np.ndarray, probs: np.ndarray, *, method: Method = "mean",
                 threshold: float = SUSPECT_THRESHOLD) -> pd.DataFrame:
    """One row per parcel of a patch (sorted by id): :data:`COLUMNS`.

    Args:
        parcels: ``(H, W)`` parcel ids (0 = no parcel).
        declared: ``(H, W)`` declared model classes (the labels mapped through the label set).
        probs: ``(C, H, W)`` class probabilities.
        method: ``mean`` (argmax of the mean probability) or ``majority`` (most frequent pixel class).
        threshold: a declared parcel whose prediction differs with a confidence above it is suspect.

    Returns:
        The table; ``agreement`` is one of :data:`AGREEMENT`.

    Raises:
        ValueError: the shapes do not match.
    """
    parcels, declared = np.asarray(parcels), np.asarray(declared)
    if parcels.shape != declared.shape or probs.shape[1:] != parcels.shape:
        raise ValueError(f"parcels {parcels.shape}, declared {declared.shape} and probabilities {probs.shape} "
                         "do not cover the same pixels")
    inside = parcels.ravel() > 0
    ids, inverse = np.unique(parcels.ravel()[inside], return_inverse=True)
    n, n_classes = len(ids), probs.shape[0]
    pixels = np.bincount(inverse, minlength=n)
    votes = np.zeros((n, n_classes), dtype=np.int64)
    np.add.at(votes, (inverse, np.asarray(declared).ravel()[inside].astype(np.int64)), 1)
    declared_class = votes.argmax(1)
    declared_share = votes.max(1) / np.maximum(pixels, 1)
    flat = probs.reshape(n_classes, -1)[:, inside]
    if method == "mean":
        sums = np.stack([np.bincount(inverse, weights=flat[c], minlength=n) for c in range(n_classes)], 1)
        mean = sums / np.maximum(pixels, 1)[:, None]
        predicted = mean.argmax(1)
        confidence = mean[np.arange(n), predicted]
    elif method == "majority":
        pixel_class = flat.argmax(0)
        counts = np.zeros((n, n_classes), dtype=np.int64)
        np.add.at(counts, (inverse, pixel_class), 1)
        predicted = counts.argmax(1)
        confidence = counts[np.arange(n), predicted] / np.maximum(pixels, 1)
    else:
        raise ValueError(f"method {method!r}: expected 'mean' or 'majority'")
    undeclared = declared_class == 0
    disagree = ~undeclared & (predicted != declared_class)
    suspect = disagree & (confidence > threshold)
    agreement = np.where(undeclared, "undeclared", np.where(suspect, "suspect",
                                                            np.where(disagree, "disagree", "agree")))
    return pd.DataFrame({"parcel_id": ids.astype(np.int64), "pixels": pixels.astype(np.int64),
                         "declared": declared_class.astype(np.int64), "declared_share": declared_share,
                         "predicted": predicted.astype(np.int64), "confidence": confidence.astype(np.float64),
                         "agreement": agreement, "suspect": suspect}, columns=COLUMNS)


def parcel_scores(tables: list[pd.DataFrame], n_classes: int) -> dict[str, float | int | None]:
    """Parcel-level accuracy, weighted and macro F1 over declared parcels (undeclared left out),
    against the declarations: the same definitions as the pixel metrics, one vote per parcel."""
    from .metrics import scores_from_confusion

    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    for table in tables:
        declared = table[table.agreement != "undeclared"]
        np.add.at(matrix, (declared.declared.to_numpy(), declared.predicted.to_numpy()), 1)
    scores = scores_from_confusion(matrix)

    def value(key: str) -> float | None:  # None, not NaN, where no parcel is declared: JSON has no NaN
        return None if np.isnan(scores[key]) else float(scores[key])

    return {"accuracy": value("accuracy"), "weighted_f1": value("weighted_f1"),
            "macro_f1": value("macro_f1"), "n_parcels": int(matrix.sum()),
            "suspect": int(sum(int(t.suspect.sum()) for t in tables))}
