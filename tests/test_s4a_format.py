"""The S4A format as published: CF time through cftime, raster attributes on the variable (or
the group), the synthetic writer's layout, and errors that survive the trip back from a worker."""

import ast
import importlib
import inspect
import pickle
import pkgutil
import shutil
from functools import partial
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

import cropseg
from cropseg.fetch.dem import DemError, patch_footprint
from cropseg.core.executor import ordered_map
from cropseg.fetch.stage import _validate
from cropseg.split.patch_table import PatchTableError, patch_row
from cropseg.split.rules import RuleError
from cropseg.s4a.tiles import TileYearError
from cropseg.s4a.netcdf import (BANDS, RASTER_ATTRIBUTES, InvalidPatch, PatchInfo, decode_time, raster_attribute,
                         validate_patch)
from cropseg.fetch.synthetic import generate_patch, plan_patches
from cropseg.fetch.synthetic_files import root_attributes, write_patch_netcdf

from conftest import tiny_data

CFG = tiny_data(patches=1).synthetic
PLAN = plan_patches(CFG, [2019], ["31TCG"])[0]
PUBLISHED_ROOT = ("title", "authors", "patch_full_name", "patch_year", "patch_name", "patch_country_code",
                  "patch_tile", "creation_date", "references", "institution", "version")
RASTERS = list(BANDS) + ["labels", "parcels"]


# --------------------------------------------------------------------------- CF time

@pytest.mark.parametrize("values, units, calendar, expected", [
    ([5.5], "days since 2019-01-01", None, ["2019-01-06T12:00"]),  # fractional values are not truncated
    ([0, 1], "seconds since 2019-01-01 00:00:00.5", None, ["2019-01-01T00:00:00.5", "2019-01-01T00:00:01.5"]),
    ([25], "hours since 2019-1-1", None, ["2019-01-02T01:00"]),  # an epoch without zero padding
    ([-1.25], "days since 2019-01-01", None, ["2018-12-30T18:00"]),  # negative offsets land on the right day
    ([-1], "days since 2019-03-01", "standard", ["2019-02-28"]),
    ([0, 86400], "seconds since 2019-02-14 10:56:21", "proleptic_gregorian",  # as xarray encodes
     ["2019-02-14T10:56:21", "2019-02-15T10:56:21"]),
    ([90.5], "minutes since 2020-02-29T23:00:00", "gregorian", ["2020-03-01T00:30:30"]),
])
def test_cf_time_is_decoded_as_cf_says(values, units, calendar, expected):
    dtype = np.float64 if any(not float(v).is_integer() for v in values) else np.int64
    decoded = decode_time(np.array(values, dtype=dtype), units, calendar)
    np.testing.assert_array_equal(decoded, np.array(expected, dtype="datetime64[ns]"))


@pytest.mark.parametrize("values, units, calendar, message", [
    ([1], "", None, "time units ''"),
    ([1], "fortnights since 2019-01-01", None, "fortnights"),
    ([1], "days after 2019-01-01", None, "no 'since'"),
    ([1], "days since 2019-01-01", "noleap", "calendar 'noleap'"),
    (np.ma.masked_array([1.0, 2.0], mask=[False, True]), "days since 2019-01-01", None, "missing"),
])
def test_unreadable_time_is_a_clear_error(values, units, calendar, message):
    with pytest.raises(ValueError, match=message):
        decode_time(values if np.ma.isMaskedArray(values) else np.array(values), units, calendar)


def test_xarray_and_cftime_agree_on_what_xarray_wrote(tmp_path):
    when = np.array(["2019-03-01T00:00:00", "2019-05-20T10:46:29.250"], dtype="datetime64[ns]")
    xr.Dataset(coords={"time": when}).to_netcdf(tmp_path / "t.nc")
    with netCDF4.Dataset(tmp_path / "t.nc") as ds:
        time = ds["time"]
        np.testing.assert_array_equal(decode_time(time[:], time.units, time.calendar), when)


# --------------------------------------------------------------------------- errors across processes

def _exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a cropseg module, subpackages included."""
    found = {}
    for module_info in pkgutil.walk_packages(cropseg.__path__, "cropseg."):
        module = importlib.import_module(module_info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("cropseg."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


#: How to build each exception a worker can raise: the constructor's own arguments.
SPECIAL_ARGS = {InvalidPatch: (Path("/data/2019_31TCG_patch_01_01.nc"), ["band group 'B05' missing", "x: y"]),
                RuleError: ("configs/split_rules/x.yaml", [("rules[1].rules[0]", "unknown key 'yeer'")]),
                TileYearError: ("tiles", "31TCJ has no 2020 patches in S4A (France: 2019 only)")}


def _instance(cls: type[BaseException]) -> BaseException:
    return cls(*SPECIAL_ARGS.get(cls, ("data/netcdf/x.nc: something is wrong",)))


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: c.__qualname__)
def test_every_exception_pickles_with_its_message(cls):
    error = _instance(cls)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is cls and str(again) == str(error) and again.args == error.args
    if isinstance(error, InvalidPatch):
        assert (again.path, again.defects) == (error.path, error.defects)
    if isinstance(error, RuleError):
        assert (again.source, again.problems) == (error.source, error.problems)
    if isinstance(error, TileYearError):
        assert (again.field, again.message) == (error.field, error.message)


#: Every exception class of the package: a new one must be added here (and so to the pickling test).
EXCEPTIONS = {"ChecksumMismatch", "DatasetError", "DemError", "DownloadError", "EvaluateError", "FetchError", "GpusBusy",
              "GridError", "HubError", "InvalidPatch", "LabelSetError", "MediansError", "NoMatchingPatches",
              "NotFound", "ParamsError", "ParcelNoiseError", "ParcelsError", "PatchTableError", "PredictError",
              "ReportError", "RuleError", "SelectionError", "SplitError", "StepFailed", "StoreError", "SweepError", "TileYearError"}


def test_the_exception_list_is_complete():
    # the pickling test runs on _exception_classes(): it must find every exception class the sources
    # define (read from the files, not from the import walk it checks), and exactly EXCEPTIONS
    classes = _exception_classes()
    walked = {f"{c.__module__}.{c.__qualname__}" for c in classes}
    package = Path(cropseg.__file__).parent
    defined = set()
    for path in sorted(package.rglob("*.py")):
        module_name = ".".join(("cropseg",) + path.relative_to(package).with_suffix("").parts)
        module = importlib.import_module(module_name.removesuffix(".__init__"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and isinstance(getattr(module, node.name, None), type) \
                    and issubclass(getattr(module, node.name), BaseException):
                defined.add(f"{module.__name__}.{node.name}")
    assert walked == defined
    assert {c.__qualname__ for c in classes} == EXCEPTIONS


def _broken_files(folder: Path) -> list[Path]:
    good = folder / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), good)
    truncated = folder / "2019_31TCG_patch_01_01.nc"
    truncated.write_bytes(good.read_bytes()[:5000])
    empty = folder / "2019_31TCG_patch_01_02.nc"
    empty.write_bytes(b"")
    return [good, truncated, empty]


def test_invalid_patches_come_back_from_worker_processes(tmp_path):
    files = _broken_files(tmp_path)
    results = ordered_map(partial(_validate, root=tmp_path), files, 2, desc="validate", progress=False)
    assert isinstance(results[0], PatchInfo)
    assert [type(r) for r in results[1:]] == [InvalidPatch, InvalidPatch]
    assert results[1].path == files[1] and "truncated" in results[1].defects[0]
    assert results[2].defects == ["not a netCDF-4/HDF5 file (HDF5 signature missing)"]


# --------------------------------------------------------------------------- raster attributes

def _move_attributes_to_group(path: Path, names: list[str], drop: bool = False) -> None:
    """Rewrite ``crs``/``transform`` the way other tools' copies keep them: on the group."""
    with netCDF4.Dataset(path, "a") as ds:
        for name in names:
            variable = ds[name][name]
            for attribute in ("crs", "transform"):
                value = variable.getncattr(attribute)
                variable.delncattr(attribute)
                if not drop:
                    ds[name].setncattr(attribute, value)


def test_raster_attribute_prefers_the_variable_then_the_group(tmp_path):
    path = tmp_path / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), path)
    with netCDF4.Dataset(path, "a") as ds:
        ds["labels"].setncattr("crs", "+init=epsg:4326")  # a stale copy on the group loses
        assert raster_attribute(ds["labels"], "labels", "crs") == ("+init=epsg:32631", "variable")
        ds["labels"]["labels"].delncattr("crs")
        assert raster_attribute(ds["labels"], "labels", "crs") == ("+init=epsg:4326", "group")
        ds["labels"].delncattr("crs")
        value, where = raster_attribute(ds["labels"], "labels", "crs")
        assert value is None
        assert where == "attribute 'crs' missing: looked on variable labels/labels and on group labels"


def test_copies_with_crs_on_the_group_are_accepted_everywhere(tmp_path):
    path = tmp_path / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), path)
    published = patch_footprint(path)
    info = validate_patch(path, tmp_path)
    _move_attributes_to_group(path, RASTERS)
    assert validate_patch(path, tmp_path) == info
    assert patch_footprint(path) == published
    row, _ = patch_row(info, tmp_path, [])
    assert row["epsg"] == 32631


def _footprint_readers_refuse(path: Path, match: str) -> None:
    """fetch_dem's footprint and the split's patch table both refuse ``path`` with ``match``."""
    with pytest.raises(DemError, match=match):
        patch_footprint(path)
    info = PatchInfo(path.name, 2019, "31TCG", PLAN.name.x, PLAN.name.y, "ES", 6, 61)
    with pytest.raises(PatchTableError, match=match):
        patch_row(info, path.parent, [])


def test_crs_nowhere_names_the_variable_and_both_places(tmp_path):
    path = tmp_path / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), path)
    _move_attributes_to_group(path, ["labels", "B05"], drop=True)
    with pytest.raises(InvalidPatch) as caught:
        validate_patch(path, tmp_path)
    assert caught.value.defects == [
        "labels: attribute 'crs' missing: looked on variable labels/labels and on group labels",
        "B05: attribute 'crs' missing: looked on variable B05/B05 and on group B05",
    ]
    _footprint_readers_refuse(path, "looked on variable labels/labels and on group labels")


def test_a_transform_that_is_not_six_numbers_is_a_defect(tmp_path):
    path = tmp_path / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), path)
    with netCDF4.Dataset(path, "a") as ds:
        ds["B02"]["B02"].setncattr("transform", np.array([10.0, 0.0, 300000.0]))
    with pytest.raises(InvalidPatch, match=r"B02: transform .* is not 6 numbers"):
        validate_patch(path, tmp_path)


# --------------------------------------------------------------------------- the synthetic layout

def test_synthetic_files_have_the_published_layout(tmp_path):
    path = tmp_path / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), path)
    with netCDF4.Dataset(path) as ds:
        assert tuple(ds.ncattrs()) == PUBLISHED_ROOT
        assert ds.patch_year == "2019" and isinstance(ds.patch_year, str)
        assert ds.patch_full_name == PLAN.name.stem and ds.patch_name == f"patch_{PLAN.name.x:02d}_{PLAN.name.y:02d}"
        assert ds.creation_date == "01 Jan 2020"  # derived from the year, never the clock
        assert set(ds.groups) == set(RASTERS)
        for name in RASTERS:
            group = ds[name]
            assert group.ncattrs() == []  # nothing on the group: it all lives on the variable
            variable = group[name]
            assert set(variable.ncattrs()) == set(RASTER_ATTRIBUTES) | {"coordinates"}
            assert variable.coordinates == "band" and variable.crs == "+init=epsg:32631"
            assert variable.AREA_OR_POINT == "Area" and int(variable.is_tiled) == 0
            res = 10 if name in ("labels", "parcels") else BANDS[name]
            np.testing.assert_array_equal(variable.res, [res, res])
            a, b, c, d, e, f = variable.transform
            assert (a, b, d, e) == (res, 0, 0, -res)
            x, y = group["x"][:], group["y"][:]
            assert (x[0], y[0]) == (c + res / 2, f - res / 2)  # x/y are pixel centres of the transform
            assert group["band"].shape == () and int(group["band"][...]) == 1
        time = ds["B02"]["time"]
        assert time.units == f"days since {PLAN.dates[0]} 00:00:00" and time.calendar == "proleptic_gregorian"
        np.testing.assert_array_equal(decode_time(time[:], time.units, time.calendar).astype("datetime64[D]"),
                                      PLAN.dates)
    assert root_attributes(PLAN.name)["patch_year"] == "2019"
    # xarray reads the scalar band coordinate the way it reads the published files
    labels = xr.open_dataset(path, group="labels")["labels"]
    assert "band" in labels.coords and labels.attrs["crs"] == "+init=epsg:32631"


def test_synthetic_bytes_do_not_depend_on_when_they_are_written(tmp_path):
    write_patch_netcdf(generate_patch(CFG, PLAN), tmp_path / "a.nc")
    write_patch_netcdf(generate_patch(CFG, PLAN), tmp_path / "b.nc")
    assert (tmp_path / "a.nc").read_bytes() == (tmp_path / "b.nc").read_bytes()


def test_fixture_files_copied_anywhere_still_validate(tmp_path):
    fixture = Path(__file__).parent / "data" / "s4a"
    for path in sorted(fixture.rglob("*.nc")):
        shutil.copy(path, tmp_path / path.name)
        assert validate_patch(tmp_path / path.name, tmp_path).size == 61


def test_a_crs_without_epsg_code_is_refused_by_both_footprint_readers(tmp_path):
    # fetch_dem and the split's patch table place patches through one reader (cropseg.s4a.grid.read_label_grid)
    path = tmp_path / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), path)
    custom = "+proj=tmerc +lat_0=0 +lon_0=1.5 +k=0.9996 +x_0=500000 +y_0=0 +ellps=intl +units=m"
    with netCDF4.Dataset(path, "a") as ds:
        ds["labels"]["labels"].setncattr("crs", custom)
    _footprint_readers_refuse(path, "has no EPSG code")


def test_the_two_grid_readers_agree_on_published_patches(tmp_path):
    # predict (read_patch_grid: transform first) and footprints/patch table (read_label_grid: x/y
    # pixel centres) read the grid by two routes; on a published patch they must place it alike
    from cropseg.s4a.grid import read_label_grid, read_patch_grid

    synthetic = tmp_path / PLAN.name.filename
    write_patch_netcdf(generate_patch(CFG, PLAN), synthetic)
    paths = sorted((Path(__file__).parent / "data" / "s4a").rglob("*.nc")) + [synthetic]
    for path in paths:
        grid, label_grid = read_patch_grid(path), read_label_grid(path)
        assert grid.crs.to_epsg() == label_grid.epsg
        assert grid.bounds == label_grid.bounds
