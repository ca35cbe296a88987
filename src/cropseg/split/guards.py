"""Guards against silent nonsense: a split a model cannot learn or be judged on.

With ``labels: crop_presence`` the default synthetic split has no ``non_crop`` pixel in train and
one val patch holding a single class: val weighted F1 is 1.0 from the first epoch, the first
model is kept, and it predicts one class everywhere. So the ``split`` stage warns, and the
``train`` stage refuses (unless ``train.allow_degenerate_split``), when a class of the label set
has no training pixel or the val split has fewer than two classes; a run whose best epoch is the
first validated one with val F1 1.0 is flagged in its summary line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_problems(train_counts: Sequence[int], val_counts: Sequence[int], class_names: Sequence[str]) -> list[str]:
    """Problems of a split for a label set, from per-model-class pixel counts (index 0: background).

    Args:
        train_counts: training pixels per model class.
        val_counts: validation pixels per model class.
        class_names: the label set's class names, background first.

    Returns:
        One sentence per problem (a class with no training pixel, fewer than two classes in
        val); empty when there is none.
    """
    train, val = np.asarray(train_counts), np.asarray(val_counts)
    problems = []
    missing = [class_names[k] for k in range(1, len(class_names)) if train[k] == 0]
    if missing:
        problems.append(f"{len(missing)} class(es) of the label set have no training pixel: {', '.join(missing)}")
    present = [class_names[k] for k in range(1, len(class_names)) if val[k] > 0]
    if len(present) < 2:
        problems.append(f"the val split holds {len(present)} class(es) ({', '.join(present) or 'none'}): "
                        f"val F1 cannot tell a model from a constant prediction")
    return problems


def suspicious_best(best_epoch: int, first_epoch: int, best_f1: float) -> str:
    """A warning when the kept model is the first validated one with a perfect val F1.

    Args:
        best_epoch: the epoch of the kept model.
        first_epoch: the first epoch that was validated.
        best_f1: the kept model's val weighted F1.

    Returns:
        The warning, or ``""``.
    """
    if best_epoch == first_epoch and best_f1 >= 1.0 - 1e-9:
        return (f"warning: val weighted F1 is 1.0 at the first validation (epoch {best_epoch}) and that model is "
                f"kept: check that the val split holds several classes")
    return ""
