"""Validation of S4A files: every defect named with its file, for any source."""

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest

from cropseg.fetch.stage import FetchError, fetch_s4a
from cropseg.core.params import Data, LocalData
from cropseg.s4a.netcdf import InvalidPatch, validate_patch
from cropseg.fetch.synthetic import generate_patch, plan_patches
from cropseg.fetch.synthetic_files import write_patch_netcdf

from conftest import tiny_data

REPO = Path(__file__).resolve().parents[1]
CFG = tiny_data(patches=1).synthetic
PLAN = plan_patches(CFG, [2019], ["31TCG"])[0]
NAME = PLAN.name.filename


def _good(folder: Path) -> Path:
    path = folder / NAME
    write_patch_netcdf(generate_patch(CFG, PLAN), path)
    return path


def _without_group(source: Path, target: Path, dropped: str) -> None:
    """Copy an S4A file group by group, leaving one group out."""
    with netCDF4.Dataset(source) as src, netCDF4.Dataset(target, "w") as dst:
        dst.setncatts(src.__dict__)
        for name, group in src.groups.items():
            if name == dropped:
                continue
            out = dst.createGroup(name)
            out.setncatts(group.__dict__)
            for dim, size in group.dimensions.items():
                out.createDimension(dim, len(size))
            for var_name, var in group.variables.items():
                copy = out.createVariable(var_name, var.dtype, var.dimensions)
                copy.setncatts({k: v for k, v in var.__dict__.items() if k != "_FillValue"})
                copy[:] = var[:]


def _broken(kind: str, folder: Path) -> Path:
    path = folder / NAME
    if kind == "truncated":
        data = _good(folder).read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "not_hdf5":
        path.write_text("this is a CSV file,not netCDF\n")
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "missing_band":
        _without_group(_good(folder.parent), path, "B05")
    elif kind == "missing_labels":
        _without_group(_good(folder.parent), path, "labels")
    elif kind in ("wrong_shape", "wrong_dtype"):
        patch = generate_patch(CFG, PLAN)
        band = patch.bands["B8A"]
        patch.bands["B8A"] = band[:, :-1, :-1] if kind == "wrong_shape" else band.astype(np.float32)
        write_patch_netcdf(patch, path)
    elif kind == "time_outside_year":
        write_patch_netcdf(generate_patch(CFG, replace(PLAN, dates=PLAN.dates + np.timedelta64(200, "D"))), path)
    elif kind == "bad_name":
        path = folder / "2019_31TCG_patch_5_20.nc"
        write_patch_netcdf(generate_patch(CFG, PLAN), path)
    elif kind == "year_mismatch":
        path = folder / NAME.replace("2019", "2020", 1)
        write_patch_netcdf(generate_patch(CFG, PLAN), path)
    return path


CASES = {
    "truncated": "corrupt or truncated",
    "not_hdf5": "HDF5 signature missing",
    "empty_file": "HDF5 signature missing",
    "missing_band": "band group 'B05' missing",
    "missing_labels": "group 'labels' missing",
    "wrong_shape": r"B8A/B8A: shape \(6, 30, 30\), expected \(\.\.\., 31, 31\)",
    "wrong_dtype": "B8A/B8A: dtype float32, expected uint16",
    "time_outside_year": "date\\(s\\) outside patch_year 2019",
    "bad_name": "does not match 'YYYY_TILE_patch_XX_YY.nc'",
    "year_mismatch": "patch_year 2019 differs from the year 2020 in the file name",
}


def test_a_good_file_passes(tmp_path):
    info = validate_patch(_good(tmp_path), tmp_path)
    assert (info.year, info.tile, info.size, info.n_dates) == (2019, "31TCG", 61, len(PLAN.dates))


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_defect_is_named_with_the_file(kind, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    path = _broken(kind, folder)
    with pytest.raises(InvalidPatch, match=CASES[kind]) as caught:
        validate_patch(path, folder)
    assert str(path) in str(caught.value)


def _local_folder(tmp_path: Path, kinds: list[str]) -> Path:
    """A flat S4A-like folder: the 4 good tiny patches plus the broken files asked for."""
    good = tmp_path / "good"
    fetch_s4a(tiny_data(), good, workers=1)
    local = tmp_path / "local"
    local.mkdir()
    for path in sorted(good.rglob("*.nc")):
        shutil.copy(path, local / path.name)
    for kind in kinds:
        (tmp_path / kind).mkdir()
        broken = _broken(kind, tmp_path / kind)
        shutil.copy(broken, local / f"{kind}_{broken.name}" if kind != "bad_name" else local / broken.name)
    return local


def test_the_stage_lists_every_bad_file_and_writes_nothing(tmp_path):
    local = _local_folder(tmp_path, ["not_hdf5", "missing_band"])
    # renamed copies no longer parse as patch names: both are reported, with their own defects
    out = tmp_path / "netcdf"
    data = Data(source="local", tiles=None, local=LocalData(path=str(local)))
    with pytest.raises(FetchError) as caught:
        fetch_s4a(data, out, workers=1)
    message = str(caught.value)
    assert "2 invalid S4A file(s)" in message
    assert "HDF5 signature missing" in message and "band group 'B05' missing" in message
    assert not out.exists()
    assert not list(tmp_path.glob(".netcdf.tmp-*"))


def test_skip_leaves_bad_files_out_and_reports_them(tmp_path):
    local = _local_folder(tmp_path, ["truncated", "bad_name"])
    out = tmp_path / "netcdf"
    data = Data(source="local", tiles=None, on_invalid="skip", local=LocalData(path=str(local)))
    summary = fetch_s4a(data, out, workers=1)
    assert (summary.patches, summary.skipped) == (4, 2)
    report = pd.read_csv(out / "invalid.csv")
    assert len(report) == 2
    assert report.defects.str.contains("truncated|does not match").all()
    index = pd.read_csv(out / "index.csv")
    assert len(index) == 4
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nc")) == sorted(index.path)


FIXTURE = Path(__file__).parent / "data" / "s4a"


def _mixed_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The 4 fixture files plus one file per defect, each under a valid, distinct patch name
    (except the misnamed one): file name -> the defect its error must name."""
    local = tmp_path / "mixed"
    local.mkdir()
    for path in sorted(FIXTURE.rglob("*.nc")):
        shutil.copy(path, local / path.name)
    work = tmp_path / "work"
    work.mkdir()
    good = _good(work)
    (local / "2019_31TCG_patch_01_01.nc").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _without_group(good, local / "2019_31TCG_patch_01_02.nc", "B05")
    write_patch_netcdf(generate_patch(CFG, PLAN), local / "2019_31TCG_patch_5_20.nc")
    write_patch_netcdf(generate_patch(CFG, PLAN), local / "2020_31TCG_patch_01_03.nc")
    shuffled = PLAN.dates.copy()
    shuffled[[1, 2]] = shuffled[[2, 1]]
    write_patch_netcdf(generate_patch(CFG, replace(PLAN, dates=shuffled)), local / "2019_31TCG_patch_01_04.nc")
    return local, {
        "2019_31TCG_patch_01_01.nc": "corrupt or truncated",
        "2019_31TCG_patch_01_02.nc": "band group 'B05' missing",
        "2019_31TCG_patch_5_20.nc": "does not match 'YYYY_TILE_patch_XX_YY.nc'",
        "2020_31TCG_patch_01_03.nc": "patch_year 2019 differs from the year 2020 in the file name",
        "2019_31TCG_patch_01_04.nc": "time: dates not strictly increasing (bands B01, B02, B03, B04, B05, B06, B07, "
                                     "B08, B8A, B09, B10, B11, B12)",
    }


def test_mixed_folder_with_default_workers_names_every_bad_file_by_its_source(tmp_path):
    local, defects = _mixed_folder(tmp_path)
    data = Data(source="local", tiles=None, local=LocalData(path=str(local)))
    with pytest.raises(FetchError) as caught:
        fetch_s4a(data, tmp_path / "netcdf")  # the default worker count: errors come back from processes
    message = str(caught.value)
    assert message.startswith("5 invalid S4A file(s)")
    lines = message.splitlines()
    for name, defect in defects.items():
        line = next(line for line in lines if line.startswith(f"  {local / name}: "))
        assert defect in line, (name, line)
    assert ".tmp-" not in message  # never the temporary folder being filled
    assert lines[-1].endswith(f"`dvc checkout {(tmp_path / 'netcdf').as_posix()}` restores it from the DVC cache)")
    assert not (tmp_path / "netcdf").exists()


def test_mixed_folder_skip_keeps_the_good_files_and_reports_the_same_bytes_twice(tmp_path):
    local, defects = _mixed_folder(tmp_path)
    data = Data(source="local", tiles=None, on_invalid="skip", local=LocalData(path=str(local)))
    reports = []
    for run in ("a", "b"):
        summary = fetch_s4a(data, tmp_path / run)
        assert (summary.patches, summary.skipped) == (4, 5)
        index = pd.read_csv(tmp_path / run / "index.csv")
        assert sorted(Path(p).name for p in index.path) == sorted(p.name for p in FIXTURE.rglob("*.nc"))
        reports.append((tmp_path / run / "invalid.csv").read_bytes())
    assert reports[0] == reports[1]
    report = pd.read_csv(tmp_path / "a" / "invalid.csv")
    assert report.path.tolist() == sorted(str(local / name) for name in defects)
    for path, found in zip(report.path, report.defects):
        assert defects[Path(path).name] in found
    assert ".tmp-" not in reports[0].decode()


def test_the_stage_says_how_to_restore_what_dvc_deleted(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: local\n  local:\n    path: {tmp_path / 'nowhere'}\n")
    done = subprocess.run([sys.executable, str(REPO / "stages" / "fetch_s4a.py"), "--params", str(params),
                           "--out", "data/netcdf"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"fetch_s4a: error: data.local.path: {tmp_path / 'nowhere'} is not a directory"
    assert lines[-1] == ("(under `dvc repro` the previous data/netcdf was deleted before this stage ran; "
                         "`dvc checkout data/netcdf` restores it from the DVC cache)")
