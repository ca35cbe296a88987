"""S4A files the project's generator did not write (tests/data/s4a, made with xarray the way the
dataset's authors made theirs) pass validation and flow through every stage."""

import json
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from cropseg.fetch.dem import fetch_dem, patch_footprint
from cropseg.evaluate.stage import EvaluatePaths, evaluate
from cropseg.fetch.stage import fetch_s4a
from cropseg.selection.irreducible import run_irreducible
from cropseg.medians.recipe import period_of, period_edges
from cropseg.medians.stage import run_medians
from cropseg.core.params import Data, Dem, LocalData, Medians, Split, parse_params
from cropseg.s4a.netcdf import BANDS, decode_time, validate_patch
from cropseg.split.stage import run_split
from cropseg.train.loop import RunPaths, train

FIXTURE = Path(__file__).parent / "data" / "s4a"
FILES = sorted(p.relative_to(FIXTURE).as_posix() for p in FIXTURE.rglob("*.nc"))
LABELS = Path(__file__).resolve().parents[1] / "configs" / "labels"
#: The thesis' rule format: nested rules with filters on year and tile.
RULES = """\
rules:
  - year: 2019
    target: train
  - year: {min: 2020, max: 2020}
    rules:
      - {tile: 31TCG, target: val}
      - {tile: [31TCJ], target: test}
  - assert_none: true
"""


def test_fixture_is_the_published_layout_not_ours():
    assert FILES == ["2019/31TCG/2019_31TCG_patch_10_10.nc", "2019/31TCJ/2019_31TCJ_patch_05_05.nc",
                     "2020/31TCG/2020_31TCG_patch_10_11.nc", "2020/31TCJ/2020_31TCJ_patch_05_06.nc"]
    with netCDF4.Dataset(FIXTURE / FILES[0]) as ds:
        assert ds.patch_year == "2019" and ds.title == "S4A Patch Dataset"
        for name in list(BANDS) + ["labels", "parcels"]:
            group = ds[name]
            assert "crs" not in group.ncattrs() and "transform" not in group.ncattrs()
            variable = group[name]
            assert variable.crs == "+init=epsg:32631" and variable.coordinates == "band"
            assert group["band"].shape == ()
        units = ds["B02"]["time"].units
        assert units == "seconds since 2019-02-14 10:56:21"  # xarray's choice: an epoch with a time of day


@pytest.mark.parametrize("relpath", FILES)
def test_every_fixture_file_validates(relpath):
    info = validate_patch(FIXTURE / relpath, FIXTURE)
    assert (info.path, info.size, info.n_dates) == (relpath, 61, 5)


def test_fixture_dates_decode_to_the_written_instants():
    year = 2020
    expected = np.array([f"{year}-02-14T10:56:21", f"{year}-03-01T00:00:00", f"{year}-05-20T10:46:29",
                         f"{year}-07-09T10:56:31", f"{year}-10-02T10:50:19"], dtype="datetime64[ns]")
    for relpath in FILES[2:]:  # integer seconds since a time of day, and float days since 2020-1-1
        with netCDF4.Dataset(FIXTURE / relpath) as ds:
            time = ds["B8A"]["time"]
            decoded = decode_time(time[:], time.units, time.calendar)
        np.testing.assert_array_equal(decoded, expected)
    # monthly bins are right-closed, (start, end], as the S4A authors' groupby_bins(right=True,
    # include_lowest=False): 00:00 on 1 March closes February. January and December stay empty.
    months = period_of(expected.astype("int64"), period_edges(year, "1MS"))
    assert months.tolist() == [1, 1, 4, 6, 9]


def test_footprint_reads_the_crs_of_the_labels_variable():
    lon_min, lat_min, lon_max, lat_max = patch_footprint(FIXTURE / FILES[0])
    # 31TCG patch (10, 10): UTM 31N x 336600..337210, y 4672590..4673200 -> near 1.04 E, 42.2 N
    assert 1.0 < lon_min < lon_max < 1.1 and 42.1 < lat_min < lat_max < 42.3
    corners = Transformer.from_crs(32631, 4326, always_xy=True).transform([336600, 337210, 336600, 337210],
                                                                           [4672590, 4672590, 4673200, 4673200])
    assert (lon_min, lat_min) == pytest.approx((min(corners[0]), min(corners[1])), abs=1e-6)
    assert (lon_max, lat_max) == pytest.approx((max(corners[0]), max(corners[1])), abs=1e-6)


def test_whole_pipeline_runs_on_the_fixture(tmp_path):
    # fetch with the default worker count: workers send results (and errors) back pickled
    summary = fetch_s4a(Data(source="local", tiles=None, local=LocalData(path=str(FIXTURE))), tmp_path / "netcdf")
    assert (summary.patches, summary.skipped) == (4, 0)
    index = pd.read_csv(tmp_path / "netcdf" / "index.csv")
    assert index.path.tolist() == FILES and set(index.n_dates) == {5}

    dem = fetch_dem(tmp_path / "netcdf", tmp_path / "dem", Dem(), progress=False)
    assert dem.patches == 4 and len(dem.tiles) == 1

    medians = run_medians(tmp_path / "netcdf", tmp_path / "medians", Medians(workers=1), progress=False)
    meta = json.loads((tmp_path / "medians" / "store.json").read_text())
    assert meta["n_patches"] == 4
    assert medians is not None

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "fixture.yaml").write_text(RULES)
    split = run_split(Split(rules="fixture"), tmp_path / "netcdf", tmp_path / "dem", tmp_path / "split",
                      rules_dir, workers=1, progress=False)
    assert split.counts == {"train": 2, "val": 1, "test": 1}
    table = pd.read_csv(tmp_path / "split" / "patches.csv")
    assert table.elevation_mean.notna().all() and (table.epsg == 32631).all()

    # 4 tiny patches hold few of the 11 classes: the degenerate-split guard is knowingly waived
    run = {"epochs": 1, "batch_size": 1, "physical_batch_size": 1, "precision": "32", "lr": 0.01,
           "allow_degenerate_split": True}
    params = parse_params({"model": {"arch": "unet", "width": 4, "depth": 1}, "train": run, "holdout": run,
                           "tracking": {"wandb": "disabled"}, "loader": {"months": [2, 11]},
                           "selection": {"method": "rho_loss", "block_size": 2, "n_batches_per_block": 1}})

    def paths(split_dir: Path, name: str) -> RunPaths:
        return RunPaths(split_dir=split_dir, model_out=tmp_path / f"{name}.pt", metrics_dir=tmp_path / name,
                        checkpoint_dir=tmp_path / f"{name}_ckpt", medians=tmp_path / "medians",
                        labels_dir=LABELS, irreducible=tmp_path / "il")

    train(params, "holdout", paths(tmp_path / "split" / "holdout", "holdout"), progress=False)
    il = run_irreducible(params, holdout_model=tmp_path / "holdout.pt", medians=tmp_path / "medians",
                         split_dir=tmp_path / "split", out=tmp_path / "il", progress=False)
    assert il.samples == 2 and np.isfinite(np.load(tmp_path / "il" / "losses.npy")).all()
    result = train(params, "train", paths(tmp_path / "split", "train"), progress=False)
    assert (tmp_path / "train.pt").is_file() and result is not None

    out = tmp_path / "evaluate"
    evaluated = evaluate(EvaluatePaths(model=tmp_path / "train.pt", medians=tmp_path / "medians",
                                       split=tmp_path / "split" / "test.txt", patches=tmp_path / "split" / "patches.csv",
                                       clean=tmp_path / "netcdf" / "truth" / "clean_labels", out=out,
                                       snapshots=None, holdout_model=tmp_path / "holdout.pt"),
                         label_set_name="s4a11", device="cpu", precision="32", batch_size=1, previews=1,
                         progress=False)
    assert evaluated.line().startswith("evaluate: 1 test patches")
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
