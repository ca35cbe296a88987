"""Per-parcel decisions (mean probability vs majority, undeclared, suspect threshold) and the seam
measurement, on hand-made arrays whose answers are known."""

import numpy as np
import pytest

from cropseg.nn.parcels import parcel_scores, parcel_table
from cropseg.predict.seams import SeamAccumulator


def test_parcel_table_mean_majority_undeclared_and_suspect():
    parcels = np.array([[1, 1, 1, 2], [0, 3, 3, 2]], dtype=np.uint32)
    declared = np.array([[1, 1, 1, 2], [0, 2, 2, 0]])  # parcel 3 is declared 2; parcel 2 half-declared 2
    probs = np.zeros((3, 2, 4))
    # parcel 1: pixels lean 0.55 to class 2 twice, one is a confident class 1: majority 2, mean 1
    probs[:, 0, 0] = [0.0, 0.45, 0.55]
    probs[:, 0, 1] = [0.0, 0.45, 0.55]
    probs[:, 0, 2] = [0.0, 0.95, 0.05]
    probs[:, 0, 3] = probs[:, 1, 3] = [0.0, 0.1, 0.9]  # parcel 2: class 2, declared 2 on 1 of 2 pixels
    probs[:, 1, 1] = probs[:, 1, 2] = [0.0, 0.95, 0.05]  # parcel 3: confidently 1 but declared 2
    probs[:, 1, 0] = [1.0, 0.0, 0.0]
    mean = parcel_table(parcels, declared, probs, threshold=0.9).set_index("parcel_id")
    majority = parcel_table(parcels, declared, probs, method="majority", threshold=0.9).set_index("parcel_id")
    assert list(mean.index) == [1, 2, 3] and list(mean.pixels) == [3, 2, 2]
    assert mean.loc[1, "predicted"] == 1 and mean.loc[1, "confidence"] == pytest.approx((0.45 + 0.45 + 0.95) / 3)
    assert majority.loc[1, "predicted"] == 2 and majority.loc[1, "confidence"] == pytest.approx(2 / 3)
    assert mean.loc[1, "agreement"] == "agree" and majority.loc[1, "agreement"] == "disagree"
    assert mean.loc[3, "agreement"] == "suspect" and bool(mean.loc[3, "suspect"])
    assert mean.loc[3, "confidence"] == pytest.approx(0.95)
    relaxed = parcel_table(parcels, declared, probs, threshold=0.96).set_index("parcel_id")
    assert relaxed.loc[3, "agreement"] == "disagree" and not relaxed.suspect.any()
    # parcel 2: a tie of declared 0 and 2 goes to the lower class: undeclared, never suspect
    assert mean.loc[2, "declared_share"] == 0.5 and mean.loc[2, "agreement"] == "undeclared"
    scores = parcel_scores([mean.reset_index()], 3)
    assert scores["n_parcels"] == 2 and scores["accuracy"] == 0.5 and scores["suspect"] == 1
    assert parcel_scores([], 3)["accuracy"] is None
    with pytest.raises(ValueError, match="do not cover the same pixels"):
        parcel_table(parcels, declared[:, :3], probs)


def test_seams_show_a_stitched_grid_and_not_a_seamless_map():
    rng = np.random.default_rng(0)
    # a seamless map: random vertical stripes of classes, boundaries anywhere
    edges = np.sort(rng.choice(np.arange(1, 122), 30, replace=False))
    seamless = np.tile(np.searchsorted(edges, np.arange(122), side="right") % 5, (122, 1))
    stitched = seamless.copy()
    stitched[:, 61:] = (stitched[:, 61:] + 1) % 5  # the right window's classes shifted: a seam at 61
    stitched[61:, :] = (stitched[61:, :] + 2) % 5
    clean, seamed = SeamAccumulator(61), SeamAccumulator(61)
    for _ in range(3):
        clean.add(seamless)
        seamed.add(stitched)
    with_seam = seamed.score()
    assert with_seam.edge_rate == 1.0 and with_seam.low > 0.5
    without = clean.score()
    assert without.edge_rate < 0.5 and with_seam.difference > 0.5 > abs(without.difference)
    assert without.inside_rate == pytest.approx(with_seam.inside_rate)  # the same map off the grid
    inside_one = SeamAccumulator(61)
    inside_one.add(stitched, np.ones_like(stitched))  # one parcel everywhere: every pair counts
    assert inside_one.score().edge_rate == 1.0
    apart = SeamAccumulator(61)
    apart.add(stitched, np.arange(stitched.size).reshape(stitched.shape) + 1)  # every pixel its own parcel
    assert clean.measurable() and seamed.measurable() and inside_one.measurable() and not apart.measurable()
    with pytest.raises(ValueError, match="no pixel pairs"):
        apart.score()
    one_window = SeamAccumulator(61)  # a patch of one window has no grid line inside: nothing to measure
    one_window.add(seamless[:61, :61])
    assert not one_window.measurable() and not SeamAccumulator(61).measurable()
    with pytest.raises(ValueError, match="no pixel pairs"):
        one_window.score()
    with pytest.raises(ValueError, match="no class maps"):
        SeamAccumulator(61).score()
