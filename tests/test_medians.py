"""The medians stage: equal to the authors' xarray recipe, stored as documented, bad input refused."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cropseg.medians.recipe import compute_patch, median_network, period_of, period_edges  # noqa: E402
from cropseg.medians.stage import MediansError, run_medians  # noqa: E402
from cropseg.medians.store_reader import open_patch, read_meta  # noqa: E402
from cropseg.core.params import Medians, ParamsError, SyntheticData, parse_params  # noqa: E402
from cropseg.s4a.netcdf import PatchName, PatchInfo, write_index  # noqa: E402
from cropseg.fetch.synthetic import PatchPlan, generate_patch  # noqa: E402
from cropseg.fetch.synthetic_files import write_patch_netcdf  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from medians_oracle import xarray_medians  # noqa: E402
from conftest import copy_without_groups  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def d(*days: str) -> np.ndarray:
    return np.array(days, dtype="datetime64[D]")


#: Right-closed periods: Jan 1 is dropped (include_lowest=False) so January is empty; Mar 1 is
#: February's single acquisition; March holds 2 (even count), May 3 (Jun 1 included), Jul 1;
#: August (interior gap) and December (extrapolated) are empty.
DATES_EMPTY_ENDS = d("2020-01-01", "2020-03-01", "2020-03-02", "2020-03-15", "2020-04-10",
                     "2020-05-03", "2020-05-20", "2020-06-01", "2020-06-05", "2020-06-25", "2020-07-14",
                     "2020-09-09", "2020-09-30", "2020-10-01", "2020-10-31", "2020-11-05", "2020-11-20")
#: Feb 1 belongs to January (right-closed), Jan 1 of the next year to December, a single
#: acquisition in the first and the last period; the middle months empty.
DATES_EDGES = d("2019-02-01", "2019-03-05", "2019-03-06", "2019-04-01", "2019-04-02", "2019-04-03",
                "2019-06-12", "2019-09-30", "2019-10-15", "2019-10-16", "2020-01-01")


def make_patch(folder: Path, dates: np.ndarray, size: int = 122, x: int = 0, index: int = 0) -> Path:
    """One synthetic S4A file with exactly these acquisition dates; returns its path."""
    year = int(str(dates[len(dates) // 2])[:4])
    cfg = SyntheticData(patch_size=size, acquisitions=len(dates), parcels=20, clouds=0.3)
    name = PatchName(year, "31TCG", x, 0)
    plan = PatchPlan(index, name, dates)
    path = folder / name.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    write_patch_netcdf(generate_patch(cfg, plan), path)
    return path


def make_netcdf_root(folder: Path, patches: list[tuple[np.ndarray, int]]) -> Path:
    """A data/netcdf-like folder (files + index.csv) holding the given (dates, size) patches."""
    infos = []
    for i, (dates, size) in enumerate(patches):
        path = make_patch(folder, dates, size, x=i, index=i)
        name = path.name
        infos.append(PatchInfo(path.relative_to(folder).as_posix(), int(name[:4]), "31TCG", i, 0, "FR",
                               len(dates), size))
    write_index(infos, folder / "index.csv")
    return folder


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# numbers


@pytest.mark.parametrize("n", list(range(1, 34)))
def test_median_network_equals_numpy_median(n):
    rng = np.random.default_rng(n)
    values = rng.integers(0, 40, (n, 257)).astype(np.uint16)  # many ties
    rows = [row.copy() for row in values]
    scratch = np.empty(257, np.uint16)
    from cropseg.medians.recipe import _batcher, _select_middle

    low, high = _select_middle(rows, scratch)
    got = (low.astype(np.float64) + high) / 2
    np.testing.assert_array_equal(got, np.median(values, axis=0))
    assert len(median_network(n)) <= len(_batcher(n))  # pruned: never more than the full sort


def test_periods_are_right_closed():
    edges = period_edges(2020, "1MS")
    times = d("2020-01-01", "2020-01-02", "2020-02-01", "2020-02-02", "2020-12-31", "2021-01-01", "2021-01-02")
    assert period_of(times.astype("datetime64[ns]").astype("int64"), edges).tolist() == [-1, 0, 0, 1, 11, 11, -1]


@pytest.mark.parametrize("dates, bands, freq, size", [
    (DATES_EMPTY_ENDS, ["B02", "B05", "B01"], "1MS", 122),
    (DATES_EDGES, ["B08", "B11"], "1MS", 122),
    (DATES_EMPTY_ENDS, ["B04"], "SMS", 61),
], ids=["empty-first-last-months", "bin-edges-single-acquisitions", "semi-monthly-61px"])
def test_fast_path_equals_xarray_recipe(tmp_path, dates, bands, freq, size):
    path = make_patch(tmp_path, dates, size)
    params = Medians(bands=bands, freq=freq, window=61)
    result = compute_patch(path, params)
    expected, expected_labels = xarray_medians(path, bands, freq, 61)
    assert result.medians.shape == expected.shape == (size // 61, size // 61, len(period_edges(result.year, freq)) - 1,
                                                      len(bands), 61, 61)
    assert result.medians.dtype == np.float32 and not np.isnan(result.medians).any()
    # identical up to float32 rounding (in practice bit-identical: same float64 formula as scipy)
    np.testing.assert_allclose(result.medians, expected, rtol=2 ** -23, atol=0)
    np.testing.assert_array_equal(result.labels, expected_labels)


def test_empty_periods_are_interpolated_from_period_starts(tmp_path):
    path = make_patch(tmp_path, DATES_EMPTY_ENDS, 61)
    m = compute_patch(path, Medians(bands=["B02"])).medians[0, 0, :, 0]
    # August (7) lies between July (6) and September (8): 31 of the 62 days from Jul 1 to Sep 1
    np.testing.assert_allclose(m[7], m[6] + (m[8] - m[6]) * 31 / 62, rtol=1e-6)
    # January (0) extrapolated back from February and March: Feb 1 - Jan 1 = 31 days, Mar 1 - Feb 1 = 29
    np.testing.assert_allclose(m[0], m[1] - (m[2] - m[1]) * 31 / 29, rtol=1e-5, atol=1e-3)
    # December (11) extrapolated from October and November
    np.testing.assert_allclose(m[11], m[10] + (m[10] - m[9]) * 30 / 31, rtol=1e-5, atol=1e-3)


def test_uint16_clips_extrapolated_values_below_0_and_above_65535(tmp_path):
    """January is extrapolated from February and March (DATES_EMPTY_ENDS): a steep rise from
    February to March sends it below 0 (left half), a steep fall above 65535 (right half). float32
    keeps the recipe's values; uint16 clips them to 0 and 65535 (README, params.yaml)."""
    year, name = 2020, PatchName(2020, "31TCG", 0, 0)
    cfg = SyntheticData(patch_size=61, acquisitions=len(DATES_EMPTY_ENDS), parcels=20, clouds=0.0)
    patch = generate_patch(cfg, PatchPlan(0, name, DATES_EMPTY_ENDS))
    values = patch.bands["B02"]
    months = DATES_EMPTY_ENDS.astype("datetime64[M]").astype(int) % 12  # calendar month of each date
    february = np.flatnonzero(DATES_EMPTY_ENDS == np.datetime64(f"{year}-03-01"))  # Mar 1: February's (right-closed)
    march = np.flatnonzero((months == 2) & (DATES_EMPTY_ENDS != np.datetime64(f"{year}-03-01")))
    values[february, :, :30], values[march, :, :30] = 100, 8000
    values[february, :, 30:], values[march, :, 30:] = 65000, 100
    path = tmp_path / name.relpath
    path.parent.mkdir(parents=True)
    write_patch_netcdf(patch, path)
    exact = compute_patch(path, Medians(bands=["B02"])).medians[0, 0, 0, 0]
    rounded = compute_patch(path, Medians(bands=["B02"], dtype="uint16")).medians[0, 0, 0, 0]
    assert exact.dtype == np.float32 and rounded.dtype == np.uint16
    np.testing.assert_allclose(exact[:, :30], 100 - 7900 * 31 / 29, rtol=1e-5)  # -8345 DN in float32
    np.testing.assert_allclose(exact[:, 30:], 65000 + 64900 * 31 / 29, rtol=1e-5)  # 134376 DN
    assert (rounded[:, :30] == 0).all() and (rounded[:, 30:] == 65535).all()


def test_uint16_store_is_within_half_a_dn(tmp_path):
    path = make_patch(tmp_path, DATES_EDGES, 61)
    exact = compute_patch(path, Medians(bands=["B02", "B05"])).medians
    rounded = compute_patch(path, Medians(bands=["B02", "B05"], dtype="uint16")).medians
    assert rounded.dtype == np.uint16
    inside = (exact >= 0) & (exact <= 65535)
    assert np.abs(rounded.astype(np.float64) - exact)[inside].max() <= 0.5


# ---------------------------------------------------------------------------------------------
# the stage: storage, determinism, executors


@pytest.fixture(scope="module")
def netcdf_root(tmp_path_factory):
    return make_netcdf_root(tmp_path_factory.mktemp("netcdf"),
                            [(DATES_EMPTY_ENDS, 122), (DATES_EDGES, 61), (DATES_EMPTY_ENDS, 61)])


def test_stage_storage_layout_and_meta(netcdf_root, tmp_path):
    from cropseg.medians.store_layout import COUNT_DTYPE
    from cropseg.medians.store_reader import Store

    params = Medians(bands=["B03", "B8A"], workers=1)
    # a cap below a 122 px patch (714 kB): the 2020 tile-year (a 122 px and a 61 px patch) splits in two
    summary = run_medians(netcdf_root, tmp_path / "medians", params, progress=False, shard_bytes=400_000)
    assert summary.patches == 3 and "3 patches" in summary.line() and "patches/s" in summary.line()
    out = tmp_path / "medians"
    meta = read_meta(out)
    assert meta["format"] == "cropseg-medians/2"
    assert meta["bands"] == ["B03", "B8A"] and meta["freq"] == "1MS" and meta["window"] == 61
    assert meta["dtype"] == "float32" and meta["labels_dtype"] == "uint32"
    assert meta["patch_size"] is None and meta["sub_patches_per_patch"] is None  # mixed sizes here
    assert meta["periods"]["2020"][0] == "2020-01-01" and len(meta["periods"]["2019"]) == 12
    assert meta["n_patches"] == 3 and meta["n_samples"] == 4 + 1 + 1
    store = Store(out)
    paths = [store.record(r)["path"] for r in range(len(store))]
    assert paths == sorted(paths) and len(paths) == 3
    by_shard: dict[str, list[int]] = {}
    for row in range(len(store)):
        record = store.record(row)
        by_shard.setdefault(record["shard"], []).append(row)
        assert record["offset"] % 4096 == 0 and record["labels_offset"] % 4096 == 0
        medians, labels = open_patch(out, record)
        assert isinstance(medians, np.memmap) and isinstance(labels, np.memmap)
        sub = record["size"] // 61
        assert medians.shape == (sub, sub, 12, 2, 61, 61) and medians.dtype == np.float32
        assert labels.shape == (sub, sub, 61, 61) and labels.dtype == np.uint32
        direct = compute_patch(netcdf_root / record["path"], params)
        np.testing.assert_array_equal(medians, direct.medians)
        np.testing.assert_array_equal(labels, direct.labels)
        cached = store.arrays(row)  # the loader's path to the same bytes
        np.testing.assert_array_equal(cached[0], direct.medians)
        np.testing.assert_array_equal(cached[1], direct.labels)
        assert record["sub_y"] == record["sub_x"] == sub and record["periods"] == 12
        # the index's code counts equal a count of the label map, sub-patch by sub-patch
        counts = store.counts[store.patches["counts_start"][row]:store.patches["counts_stop"][row]]
        assert counts.dtype == COUNT_DTYPE
        codes = np.asarray(meta["codes"])[counts["code"]]
        for k, cut in enumerate(direct.labels.reshape(sub * sub, 61, 61)):
            mine = counts["sample"] == record["first_sample"] + k
            expected = dict(zip(*np.unique(cut, return_counts=True)))
            assert dict(zip(codes[mine].tolist(), counts["pixels"][mine].tolist())) == \
                {int(c): int(n) for c, n in expected.items()}
    # shards: one tile-year each, in path order, split at the cap
    assert sorted(by_shard) == ["shards/2019_31TCG_000.bin", "shards/2020_31TCG_000.bin", "shards/2020_31TCG_001.bin"]
    assert [s["patches"] for s in meta["shards"]] == [1, 1, 1]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["counts.npy", "patches.npy", *sorted(by_shard), "store.json"]
    assert not list(tmp_path.glob(".medians*"))  # no temporary sibling left


def test_shards_hold_many_patches_under_the_default_cap(netcdf_root, tmp_path):
    out = tmp_path / "medians"
    summary = run_medians(netcdf_root, out, Medians(workers=1), progress=False)
    assert summary.shards == 2 and "2 shard(s)" in summary.line()  # one per tile-year
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["2019_31TCG_000.bin", "2020_31TCG_000.bin"]


def test_same_bytes_twice_and_with_a_process_pool(netcdf_root, tmp_path):
    small = 400_000  # several shards, so that workers write into shared shard files
    run_medians(netcdf_root, tmp_path / "a", Medians(workers=1), progress=False, shard_bytes=small)
    run_medians(netcdf_root, tmp_path / "b", Medians(workers=1), progress=False, shard_bytes=small)
    run_medians(netcdf_root, tmp_path / "c", Medians(workers=2), progress=False, shard_bytes=small)
    assert len(list((tmp_path / "a" / "shards").iterdir())) == 3
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b") == tree_digest(tmp_path / "c")


def test_dask_scheduler_gives_the_same_bytes(netcdf_root, tmp_path, monkeypatch):
    from distributed import LocalCluster

    run_medians(netcdf_root, tmp_path / "pool", Medians(scheduler="processes", workers=1), progress=False)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        summary = run_medians(netcdf_root, tmp_path / "dask", Medians(scheduler="dask", workers=1), progress=False)
    assert summary.executor.startswith("dask") and cluster.scheduler_address in summary.executor
    assert tree_digest(tmp_path / "pool") == tree_digest(tmp_path / "dask")


# ---------------------------------------------------------------------------------------------
# bad input: a clear error naming file and band, nothing half-written


def _break_undecodable(root: Path) -> str:
    victim = sorted(root.rglob("*.nc"))[1]
    victim.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    return victim.name


def _break_truncated(root: Path) -> str:
    victim = sorted(root.rglob("*.nc"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 3])
    return victim.name


@pytest.mark.parametrize("case", ["undecodable", "undecodable-pool", "truncated", "no-acquisition", "one-period",
                                  "window"])
def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path, case):
    root = tmp_path / "netcdf"
    params = Medians(bands=["B02", "B03"], workers=2 if case.endswith("-pool") else 1)
    if case.startswith(("undecodable", "truncated")):
        make_netcdf_root(root, [(DATES_EDGES, 61), (DATES_EDGES, 61), (DATES_EMPTY_ENDS, 61)])
        name = (_break_truncated if case == "truncated" else _break_undecodable)(root)
        expect = [] if case == "truncated" else ["cannot be decoded"]
    elif case == "no-acquisition":  # only Jan 1 00:00 of the year: outside every right-closed period
        make_netcdf_root(root, [(DATES_EDGES, 61), (d("2020-01-01", "2020-01-01"), 61)])
        name, expect = "2020_31TCG_patch_01_00.nc", ["band B02", "no acquisition"]
    elif case == "one-period":
        make_netcdf_root(root, [(d("2020-03-02", "2020-03-09", "2020-03-20"), 61)])
        name, expect = "2020_31TCG_patch_00_00.nc", ["band B02", "only 1 period"]
    else:
        make_netcdf_root(root, [(DATES_EDGES, 122)])
        params = Medians(bands=["B02"], window=50, workers=1)
        name, expect = "2019_31TCG_patch_00_00.nc", ["labels", "122", "window=50"]
    out = tmp_path / "medians"
    out.mkdir()
    (out / "previous.txt").write_text("kept")
    with pytest.raises(MediansError) as error:
        run_medians(root, out, params, progress=False)
    message = str(error.value)
    assert name in message
    for part in expect:
        assert part in message
    if case == "truncated":
        assert "band B0" in message or "labels" in message or "cannot be decoded" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medians", "netcdf"]  # no temporary left
    assert [p.name for p in out.iterdir()] == ["previous.txt"]


def _strip_groups(path: Path, groups: tuple[str, ...]) -> Path:
    """A copy of an S4A file without the given groups (a season with no declarations yet), beside it."""
    return copy_without_groups(path, path.with_name("stripped_" + path.name), groups)


def test_a_file_without_labels_and_parcels_gets_the_same_medians_and_zero_labels(tmp_path):
    labelled = make_patch(tmp_path, DATES_EDGES, size=122)
    unlabelled = _strip_groups(labelled, ("labels", "parcels"))
    params = Medians(bands=["B02", "B08"], window=61)
    with_labels, without = compute_patch(labelled, params), compute_patch(unlabelled, params)
    assert with_labels.labels.any()
    np.testing.assert_array_equal(without.medians, with_labels.medians)
    assert without.labels.shape == with_labels.labels.shape and not without.labels.any()
    assert (without.size, without.year) == (122, with_labels.year)
    nothing = _strip_groups(labelled, ("labels", "parcels", "B02", "B03", "B04", "B08"))
    with pytest.raises(MediansError, match="neither a labels group nor a 10 m band"):
        compute_patch(nothing, Medians(bands=["B05"], window=61))


def test_an_unlabelled_copy_of_a_file_written_like_the_authors_keeps_its_medians(tmp_path):
    """Outside evidence: a tests/data/s4a file (written with xarray as the S4A authors wrote theirs, not by
    this project's generator), its labels and parcels removed, gives the same medians and zero labels."""
    fixture = sorted((Path(__file__).parent / "data" / "s4a").rglob("*.nc"))[0]
    copy = tmp_path / fixture.name
    copy.write_bytes(fixture.read_bytes())
    params = Medians(bands=["B02", "B08"], window=61)
    labelled = compute_patch(copy, params)
    unlabelled = compute_patch(_strip_groups(copy, ("labels", "parcels")), params)
    assert labelled.labels.any() and not unlabelled.labels.any()
    np.testing.assert_array_equal(unlabelled.medians, labelled.medians)
    assert (unlabelled.size, unlabelled.year) == (labelled.size, labelled.year)


def test_params_validation():
    with pytest.raises(ParamsError, match="medians.bands"):
        parse_params({"medians": {"bands": ["B02", "B13"]}})
    with pytest.raises(ParamsError, match="medians.freq"):
        parse_params({"medians": {"freq": "monthly"}})
    with pytest.raises(ParamsError, match="medians.scheduler"):
        parse_params({"medians": {"scheduler": "threads"}})
    assert parse_params({}).medians == Medians()


def test_stage_script_help_and_run(netcdf_root, tmp_path):
    script = REPO / "stages" / "medians.py"
    shown = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True)
    assert "--netcdf" in shown.stdout and "data/medians" in shown.stdout
    params = tmp_path / "params.yaml"
    params.write_text("medians:\n  bands: [B04]\n  workers: 1\n")
    done = subprocess.run([sys.executable, str(script), "--netcdf", str(netcdf_root), "--out",
                           str(tmp_path / "out"), "--params", str(params), "--no-progress"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.startswith("medians: 3 patches,") and "patches/s" in done.stdout
    assert read_meta(tmp_path / "out")["bands"] == ["B04"]
