"""The synthetic S4A generator: real S4A format, deterministic, truth consistent with the labels."""

import hashlib

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cropseg.fetch.stage import fetch_s4a
from cropseg.s4a.netcdf import BANDS, parse_patch_name, read_index
from cropseg.fetch.synthetic import CROPS, acquisition_dates, generate_patch, plan_patches

from conftest import tiny_data


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_files_look_like_real_s4a(tiny_netcdf):
    index = read_index(tiny_netcdf / "index.csv")
    assert len(index) == 4
    first = tiny_netcdf / index[0].path
    assert first.relative_to(tiny_netcdf).parts[:2] == (str(index[0].year), index[0].tile)
    root = xr.open_dataset(first)
    assert root.attrs["patch_full_name"] == first.stem
    assert root.attrs["patch_country_code"] in ("ES", "FR")
    for band, resolution in BANDS.items():
        da = xr.open_dataset(first, group=band)[band]
        assert da.dims == ("time", "y", "x")
        assert da.dtype == np.uint16
        assert da.shape[1:] == ({10: 61, 20: 31, 60: 11}[resolution],) * 2
        assert np.issubdtype(da.time.dtype, np.datetime64)
        assert (da.time.dt.year == index[0].year).all()
    labels = xr.open_dataset(first, group="labels")["labels"]
    assert labels.shape == (61, 61) and labels.dtype == np.uint32
    parcels = xr.open_dataset(first, group="parcels")["parcels"]
    assert parcels.dtype == np.uint32
    # background pixels have no parcel, parcels carry crop codes the generator knows
    assert set(np.unique(labels.values)) <= {0} | {c.code for c in CROPS}
    assert ((parcels.values == 0) == (labels.values == 0)).all()


def test_default_size_band_shapes_match_s4a():
    cfg = tiny_data(patch_size=366, acquisitions=3).synthetic
    patch = generate_patch(cfg, plan_patches(cfg, [2019], ["31TCG"])[0])
    assert patch.bands["B02"].shape == (3, 366, 366)
    assert patch.bands["B05"].shape == (3, 183, 183)
    assert patch.bands["B01"].shape == (3, 61, 61)
    assert patch.labels.shape == (366, 366)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    fetch_s4a(tiny_data(), tmp_path / "a", workers=1)
    fetch_s4a(tiny_data(), tmp_path / "b", workers=2)
    fetch_s4a(tiny_data(seed=1), tmp_path / "c", workers=1)
    a, b, c = (_digests(tmp_path / n) for n in "abc")
    assert a == b
    # another seed places other patches (other file names) and fills every file both runs write differently
    shared = a.keys() & c.keys()
    assert {"index.csv", "truth/truth.csv"} <= shared
    assert [name for name in sorted(shared) if a[name] == c[name]] == []
    assert {n for n in a if n.endswith(".nc")} != {n for n in c if n.endswith(".nc")}
    assert a != c


def test_patches_spread_over_years_and_tiles_with_valid_names():
    cfg = tiny_data(patches=10).synthetic
    plans = plan_patches(cfg, [2019, 2020], ["31TCG", "31TDG"])
    combos = pd.Series([(p.name.year, p.name.tile) for p in plans]).value_counts()
    assert sorted(combos.values) == [2, 2, 3, 3]
    for plan in plans:
        assert parse_patch_name(plan.name.filename) == plan.name
    assert len({p.name.relpath for p in plans}) == 10


def test_acquisitions_are_irregular_with_empty_months():
    cfg = tiny_data(acquisitions=40, empty_months=3).synthetic
    dates = acquisition_dates(cfg, 2019, "31TCG")
    assert len(dates) == 40 and (np.diff(dates).astype(int) > 0).all()
    months = set(dates.astype("datetime64[M]").astype(int) % 12 + 1)
    assert 6 <= len(months) <= 9  # at least the 3 chosen months are empty
    gaps = np.diff(dates).astype(int)
    assert gaps.min() != gaps.max()


def _window(wy, wx):
    return np.s_[wy * 61:(wy + 1) * 61, wx * 61:(wx + 1) * 61]


def _pairs(labels, clean):
    """{(label code, clean code): pixels} of the labelled pixels."""
    keys, counts = np.unique(np.stack([labels[labels > 0], clean[labels > 0]]), axis=1, return_counts=True)
    return {(int(a), int(b)): int(n) for (a, b), n in zip(keys.T, counts)}


def test_mislabelled_parcels_and_truth_table_agree_with_the_labels(tmp_path):
    out = tmp_path / "netcdf"
    fetch_s4a(tiny_data(patches=3, patch_size=122, mislabelled=0.3), out, workers=1)
    truth = pd.read_csv(out / "truth" / "truth.csv")
    assert tuple(truth.columns) == ("path", "window_y", "window_x", "label_code", "clean_code", "pixels")
    keys = list(zip(truth.path, truth.window_y, truth.window_x, truth.label_code, truth.clean_code))
    assert keys == sorted(set(keys))  # one row per pair and window, sorted
    assert (truth.label_code > 0).all() and (truth.pixels > 0).all()
    assert truth.path.nunique() == 3 and len(truth.groupby(["path", "window_y", "window_x"])) == 3 * 4
    for path, rows in truth.groupby("path"):
        labels = xr.open_dataset(out / path, group="labels")["labels"].values
        clean = np.load(out / "truth" / "clean_labels" / f"{parse_patch_name(path).stem}.npy")
        assert clean.shape == labels.shape
        assert ((clean == 0) == (labels == 0)).all()  # noise relabels crops, never background
        for (wy, wx), window_rows in rows.groupby(["window_y", "window_x"]):
            table = {(r.label_code, r.clean_code): r.pixels for r in window_rows.itertuples()}
            assert table == _pairs(labels[_window(wy, wx)], clean[_window(wy, wx)])
    noisy = truth.pixels[truth.label_code != truth.clean_code].sum()
    share = noisy / truth.pixels.sum()
    assert 0.1 < share < 0.5  # about 30 % of crop parcels, weighted by their size


def test_clean_generation_has_no_noisy_pixels(tiny_netcdf):
    truth = pd.read_csv(tiny_netcdf / "truth" / "truth.csv")
    assert (truth.label_code == truth.clean_code).all()
    assert truth.pixels.sum() > 0


def test_classes_are_separable_by_their_seasonal_curves():
    """Every two classes' mean NDVI curves differ somewhere in the season by more than 0.02.

    Not on its own a separability claim (parcels of one class spread more than that, up to 0.16
    NDVI from their class's curve); the README's claim is checked by the random forest below."""
    cfg = tiny_data(patch_size=366, acquisitions=36, clouds=0.0, class_mix="balanced", parcels=120).synthetic
    patch = generate_patch(cfg, plan_patches(cfg, [2019], ["31TCG"])[0])
    red = patch.bands["B04"].astype(float)
    nir = patch.bands["B08"].astype(float)
    ndvi = (nir - red) / (nir + red)
    curves = {}
    for code in np.unique(patch.labels[patch.labels > 0]):
        curves[code] = ndvi[:, patch.labels == code].mean(axis=1)
    codes = sorted(curves)
    between = min(np.abs(curves[a] - curves[b]).max() for i, a in enumerate(codes) for b in codes[i + 1:])
    assert len(codes) >= 10
    assert between > 0.02


def test_a_random_forest_on_monthly_medians_separates_the_classes_as_the_readme_says():
    """README: a random forest on per-pixel monthly medians (4 bands, April-September) separates the
    14 classes at 95 % pixel accuracy. Trained on the pixels of even parcel ids, scored on the others
    (unseen parcels), clean labels; 0.950 measured with the pinned scikit-learn."""
    from sklearn.ensemble import RandomForestClassifier

    cfg = tiny_data(patch_size=366, acquisitions=36, clouds=0.0, class_mix="balanced", parcels=120,
                    empty_months=0).synthetic
    patch = generate_patch(cfg, plan_patches(cfg, [2019], ["31TCG"])[0])
    months = patch.plan.dates.astype("datetime64[M]").astype(int) % 12 + 1
    season = [month for month in range(4, 10) if (months == month).any()]  # the draw leaves July empty
    assert len(season) >= 5
    features = [np.median(patch.bands[band][months == month].astype(float), axis=0)
                for band in ("B02", "B03", "B04", "B08") for month in season]
    x = np.stack(features, -1).reshape(-1, len(features))
    y, parcel = patch.clean_labels.ravel(), patch.parcels.ravel()
    x, y, parcel = x[y > 0], y[y > 0], parcel[y > 0]
    train = parcel % 2 == 0
    assert len(np.unique(y)) == 14 and 0.3 < train.mean() < 0.7
    forest = RandomForestClassifier(n_estimators=50, random_state=0, n_jobs=1).fit(x[train][::4], y[train][::4])
    accuracy = (forest.predict(x[~train]) == y[~train]).mean()
    assert accuracy >= 0.94, accuracy


def test_patches_only_on_the_tile_years_s4a_has():
    cfg = tiny_data(patches=48).synthetic
    # France has 2019 only: the pair (2020, 31TCJ) is skipped, the others get 16 patches each
    plans = plan_patches(cfg, [2019, 2020], ["31TCJ", "31TCG"])
    assert pd.Series([p.name.relpath[:10] for p in plans]).value_counts().to_dict() == {
        "2019/31TCG": 16, "2019/31TCJ": 16, "2020/31TCG": 16}
    assert all(0 <= p.name.x < 30 and 0 <= p.name.y < 30 for p in plans)
    assert plans[0].name.filename.startswith("2019_31TCG_patch_")
    # tiles=None (data.tiles: all): every S4A tile of the years, 11 in 2019 and 5 in 2020
    every = plan_patches(tiny_data(patches=16).synthetic, [2019, 2020], None)
    assert sorted({(p.name.year, p.name.tile) for p in every}) == [
        (2019, t) for t in ("31TBF", "31TCF", "31TCG", "31TCJ", "31TCL", "31TDF", "31TDG", "31TDK", "31TDM",
                            "31UCP", "31UDR")] + [(2020, t) for t in ("31TBF", "31TCF", "31TCG", "31TDF", "31TDG")]


@pytest.mark.parametrize("years, tiles, message", [
    ([2020], ["31TCJ"], r"data.tiles: 31TCJ has no 2020 patches in S4A \(France: 2019 only\)"),
    ([2019], ["31TCG", "31TCK"], r"data.tiles: 31TCK is not an S4A tile \(S4A has Catalonia \(ES\) 2019, 2020: 31TBF"),
    ([2019, 2020], ["31TCJ", "31TDK"], r"data.years: 2020 has no patches on 31TCJ 31TDK in S4A \(it has 2020 "
                                       r"patches on 31TBF 31TCF 31TCG 31TDF 31TDG only\)"),
    ([2021], None, r"data.years: 2021 has no patches in S4A \(S4A has patches of 2019, 2020 only\)"),
])
def test_tile_years_s4a_lacks_are_clear_errors(years, tiles, message):
    with pytest.raises(ValueError, match=message):
        plan_patches(tiny_data().synthetic, years, tiles)


def test_fetch_notes_the_skipped_tile_years(tmp_path, capsys):
    data = tiny_data(patches=3).model_copy(update={"tiles": ["31TCG", "31TCJ"]})
    fetch_s4a(data, tmp_path / "netcdf", workers=1)
    assert capsys.readouterr().err.splitlines()[0] == ("fetch_s4a: note: skipped tile-years S4A does not have: "
                                                       "31TCJ 2020 (France: 2019 only)")
    assert sorted(p.relative_to(tmp_path / "netcdf").as_posix()[:10] for p in (tmp_path / "netcdf").rglob("*.nc")) \
        == ["2019/31TCG", "2019/31TCJ", "2020/31TCG"]


@pytest.mark.parametrize("patches", [901])
def test_too_many_patches_for_a_tile_is_a_clear_error(patches):
    cfg = tiny_data(patches=patches, patch_size=366).synthetic
    with pytest.raises(ValueError, match="does not fit: at most 900"):
        plan_patches(cfg, [2019], ["31TCG"])


def test_window_mislabelling_mislabels_whole_windows(tmp_path):
    out = tmp_path / "netcdf"
    fetch_s4a(tiny_data(patches=3, patch_size=244, mislabelled=0.5, mislabelled_unit="window"), out, workers=1)
    truth = pd.read_csv(out / "truth" / "truth.csv")
    truth["noisy"] = truth.pixels.where(truth.label_code != truth.clean_code, 0)
    windows = truth.groupby(["path", "window_y", "window_x"])[["pixels", "noisy"]].sum()
    noisy = windows[windows.noisy > 0]
    # per-sample noise: a window is either wholly mislabelled or clean
    assert (noisy.noisy == noisy.pixels).all()
    assert 0.25 < len(noisy) / len(windows) < 0.75
    for path in truth.path.unique():
        labels = xr.open_dataset(out / path, group="labels")["labels"].values
        clean = np.load(out / "truth" / "clean_labels" / f"{parse_patch_name(path).stem}.npy")
        assert ((labels == 0) == (clean == 0)).all()
        assert set(np.unique(labels)) <= {0} | {c.code for c in CROPS}


def _patches(**knobs):
    cfg = tiny_data(**knobs).synthetic
    # 31TCJ (France) has 2019 only: 2 patches are 2019/31TCG and 2019/31TCJ, as before S4A's tile-years were checked
    return [generate_patch(cfg, plan) for plan in plan_patches(cfg, [2019, 2020], ["31TCG", "31TCJ"])]


def test_redundancy_covers_a_share_of_windows_with_one_clean_wheat_field():
    knobs = {"patches": 8, "patch_size": 366, "acquisitions": 4, "mislabelled": 0.2}
    base, redundant = _patches(**knobs), _patches(**knobs, redundancy=0.3)
    assert CROPS[0].name == "wheat" and CROPS[0].code == 110  # the dominant class
    assert CROPS[0].share == max(c.share for c in CROPS)
    windows = changed = 0
    for before, after in zip(base, redundant):
        outside = np.ones(before.labels.shape, dtype=bool)
        for wy in range(6):
            for wx in range(6):
                window = _window(wy, wx)
                windows += 1
                if (after.parcels[window] == before.parcels[window]).all():
                    continue
                changed += 1
                outside[window] = False
                # one clean field of the dominant class, no margin inside the window: every pixel is wheat
                assert (after.labels[window] == 110).all() and (after.clean_labels[window] == 110).all()
                assert len(np.unique(after.parcels[window])) == 1
                assert not np.isin(after.parcels[window][0, 0], after.parcels[outside]).any()
        # the other windows are drawn as without redundancy (only the redundant windows' own stream is new)
        for name in ("labels", "clean_labels", "parcels"):
            np.testing.assert_array_equal(getattr(after, name)[outside], getattr(before, name)[outside], err_msg=name)
    assert windows == 8 * 36
    assert abs(changed / windows - 0.3) < 0.08, changed / windows
    # per-parcel timing and brightness vary: two redundant fields of one patch are near-duplicates, not copies
    patch = max(redundant, key=lambda p: (p.labels == 110).sum())
    fields = [f for f in np.unique(patch.parcels[patch.labels == 110])
              if (patch.parcels == f).sum() == 61 * 61]
    assert len(fields) >= 2
    a, b = (patch.bands["B08"][:, patch.parcels == f].mean(1) for f in fields[:2])
    assert not np.array_equal(a, b) and np.corrcoef(a, b)[0, 1] > 0.9


def test_window_mislabelling_applies_to_redundant_windows_too():
    knobs = {"patches": 4, "patch_size": 366, "acquisitions": 4, "mislabelled": 0.5, "mislabelled_unit": "window"}
    mislabelled_fields = 0
    for patch in _patches(**knobs, redundancy=0.5):
        for wy in range(6):
            for wx in range(6):
                clean, labels = patch.clean_labels[_window(wy, wx)], patch.labels[_window(wy, wx)]
                if (clean == 110).all() and (labels != 110).any():
                    assert len(np.unique(labels)) == 1  # the whole field shifted to one wrong class
                    mislabelled_fields += 1
    assert mislabelled_fields >= 3


def _array_digest(patches) -> str:
    """sha256 over every generated array (name, dtype, shape, bytes) of ``patches``, in order."""
    digest = hashlib.sha256()
    for patch in patches:
        arrays = {"labels": patch.labels, "clean_labels": patch.clean_labels, "parcels": patch.parcels}
        arrays |= {band: patch.bands[band] for band in sorted(patch.bands)}
        for name, values in arrays.items():
            digest.update(f"{name} {values.dtype.str} {values.shape}".encode())
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


#: _array_digest of _patches(patches=2, patch_size=122, label_noise=0.3, label_noise_unit=UNIT) made by
#: the generator before redundancy existed (commit de1fd6d^, run from `git archive`; the knob was
#: then called label_noise).
BEFORE_REDUNDANCY = {"parcel": "cd665e80ef7a23a7908c3fee7bc57deea27599c814435767e419c1cdf402a0d4",
                     "window": "b643744bfaacb88bec9d02229a7cb5e9c97e36c4d1851d88d07eab5cf45b2750"}


@pytest.mark.parametrize("unit", sorted(BEFORE_REDUNDANCY))
def test_redundancy_zero_changes_nothing(unit):
    """Default 0, and 0 generates exactly what the generator generated before the option existed."""
    assert tiny_data().synthetic.redundancy == 0.0
    patches = _patches(patches=2, patch_size=122, mislabelled=0.3, mislabelled_unit=unit, redundancy=0.0)
    assert _array_digest(patches) == BEFORE_REDUNDANCY[unit]


def test_redundant_windows_draw_from_their_own_stream():
    """The redundancy code path taken with no window drawn (1e-12) leaves every array as with 0: the
    redundant windows' draws do not shift the others."""
    knobs = {"patches": 2, "patch_size": 122, "mislabelled": 0.3}
    for before, after in zip(_patches(**knobs), _patches(**knobs, redundancy=1e-12)):
        for name in ("labels", "clean_labels", "parcels"):
            np.testing.assert_array_equal(getattr(after, name), getattr(before, name))
        for band, values in before.bands.items():
            np.testing.assert_array_equal(after.bands[band], values, err_msg=band)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_redundancy_out_of_range_is_an_error(value):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="redundancy"):
        tiny_data(redundancy=value)
