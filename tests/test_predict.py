"""The predict stage: georeferenced COGs on the patch footprint, equal to the evaluate stage's
predictions, VRT mosaics that read back as the patches, legend and QGIS style, both S4A attribute
layouts, byte-identical reruns, and the folder command (``python -m cropseg.predict.folder``) on an
S4A folder."""

import csv
import json
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import from_bounds

from cropseg.nn.checkpoint import model_file, save_atomic
from cropseg.nn.dataset import SubPatchDataset
from cropseg.fetch.stage import fetch_s4a
from cropseg.s4a.grid import GridError, read_patch_grid
from cropseg.split.labels import load_label_set
from cropseg.medians.stage import run_medians
from cropseg.nn.models import build_model
from cropseg.core.params import Loader, Medians
from cropseg.nn.precision import FP32
from cropseg.nn.precise_bn import recalibrate
from cropseg.predict.stage import PredictError, cog_relpath, predict_patches
from cropseg.nn.parcels import SUSPECT_THRESHOLD

from conftest import copy_without_groups, tiny_data

REPO = Path(__file__).resolve().parents[1]
BATCH = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """6 tiny patches (122 px: 2 x 2 sub-patches) over 4 tile-years, medians, a calibrated model."""
    root = tmp_path_factory.mktemp("predict")
    fetch_s4a(tiny_data(patches=6, patch_size=122, acquisitions=8), root / "netcdf", workers=1)
    run_medians(root / "netcdf", root / "medians", Medians(workers=1), progress=False)
    paths = sorted(p.relative_to(root / "netcdf").as_posix() for p in (root / "netcdf").rglob("*.nc"))
    label_set = load_label_set("s4a11")
    loader = Loader(months=[4, 9])
    dataset = SubPatchDataset(root / "medians", paths, label_set, months=[4, 9], normalize=loader.normalize,
                              skip_empty=False)
    torch.manual_seed(0)
    model = build_model("unet", bands=4, months=6, n_classes=label_set.n_classes, width=4, depth=1)
    with torch.no_grad():  # a less trivial model than the initial one: random head, calibrated BN
        model.head.weight.normal_(0, 2.0)
    recalibrate(model, dataset, np.arange(len(dataset)), batch_size=5, device=torch.device("cpu"), precision=FP32)
    save_atomic(model_file(model, arch="unet", model_config=model.config, label_set=label_set.to_dict(),
                           loader=loader.model_dump(), metrics={"weighted_f1": 0.5}, epoch=2), root / "model.pt")
    return root, paths, dataset


def _run(root: Path, paths: list[str], out: Path, preview: Path | None = None, metrics: Path | None = None,
         netcdf: Path | None = None):
    return predict_patches(model_path=root / "model.pt", medians=root / "medians", netcdf=netcdf or root / "netcdf",
                           patch_list=paths, out=out, preview=preview, metrics=metrics, device="cpu", precision="32",
                           label_set_name="s4a11", progress=False)


def _footprint(nc: Path) -> tuple[int, tuple[float, float, float, float]]:
    """EPSG and bounds from the netCDF's own pixel-centre coordinates (independent of the transform)."""
    with netCDF4.Dataset(nc) as ds:
        group = ds["labels"]
        x, y = np.asarray(group["x"][:]), np.asarray(group["y"][:])
        crs = group.getncattr("crs") if "crs" in group.ncattrs() else group["labels"].getncattr("crs")
    half = abs(x[1] - x[0]) / 2
    return int(str(crs).split(":")[-1]), (x.min() - half, y.min() - half, x.max() + half, y.max() + half)


def test_cogs_sit_on_the_patch_footprint_and_equal_the_evaluate_predictions(world, tmp_path):
    root, paths, dataset = world
    result = _run(root, paths, tmp_path / "out", tmp_path / "mosaic.png")
    assert result.patches == 6 and result.line().startswith("predict: 6 patches")

    # an independent whole-patch input: every sub-patch read through the training dataset, stitched back
    from cropseg.nn.checkpoint import load_model
    from cropseg.medians.subpatches import stitch

    model = torch.load(root / "model.pt", weights_only=True)
    net, _ = load_model(root / "model.pt")
    net.eval()
    expected = {}
    for p in range(len(paths)):
        batch = dataset[list(range(p * dataset.per_patch, (p + 1) * dataset.per_patch))]
        x = stitch(batch.x.numpy().reshape(dataset.sub_y, dataset.sub_x, *batch.x.shape[1:]))
        with torch.no_grad():
            expected[p] = net(torch.from_numpy(np.ascontiguousarray(x))[None])[0].argmax(0).numpy()
    assert model["model"]["norm"] == "precise"

    seen_classes = set()
    for p, relpath in enumerate(paths):
        with rasterio.open(tmp_path / "out" / cog_relpath(relpath)) as cog:
            epsg, bounds = _footprint(root / "netcdf" / relpath)
            assert cog.crs.to_epsg() == epsg
            np.testing.assert_allclose(tuple(cog.bounds), bounds, atol=1e-6)
            assert (cog.count, cog.dtypes, cog.nodata) == (2, ("uint8", "uint8"), 0)
            assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            classes, confidence = cog.read(1), cog.read(2)
            np.testing.assert_array_equal(classes, expected[p])
            assert cog.colormap(1)[0][3] == 0 and cog.colormap(1)[1][3] == 255
            assert cog.tags()["CLASS_NAMES"].split(",") == list(load_label_set("s4a11").class_names)
            assert cog.tags(1)["CLASS_3"] == load_label_set("s4a11").class_names[3]
        # confidence = 255 * max probability, at least 1/classes
        assert confidence.min() >= np.floor(255 / 12) and confidence.max() <= 255
        seen_classes |= set(np.unique(classes).tolist())
    assert len(seen_classes) > 2  # a real map, not a constant


def test_vrt_mosaic_reads_back_as_its_patches_and_legend_matches(world, tmp_path):
    root, paths, _ = world
    _run(root, paths, tmp_path / "out", tmp_path / "mosaic.png")
    out = tmp_path / "out"
    by_tile_year: dict[str, list[str]] = {}
    for relpath in paths:
        by_tile_year.setdefault("_".join(Path(relpath).name.split("_")[:2]), []).append(relpath)
    assert sorted(p.stem for p in (out / "mosaics").glob("*.vrt")) == sorted(by_tile_year)
    key = max(sorted(by_tile_year), key=lambda k: len(by_tile_year[k]))
    assert len(by_tile_year[key]) == 2  # a mosaic of several patches is tested
    with rasterio.open(out / "mosaics" / f"{key}.vrt") as mosaic:
        assert mosaic.count == 2 and mosaic.nodata == 0
        for relpath in by_tile_year[key]:
            with rasterio.open(out / cog_relpath(relpath)) as cog:
                window = from_bounds(*cog.bounds, transform=mosaic.transform)
                np.testing.assert_array_equal(mosaic.read(window=window), cog.read())
                assert mosaic.crs == cog.crs
    rows = list(csv.DictReader((out / "legend.csv").open()))
    names = load_label_set("s4a11").class_names
    assert [r["name"] for r in rows] == list(names) and rows[0]["value"] == "0"
    qml = (out / "legend.qml").read_text()
    assert 'type="paletted"' in qml and f'label="{names[1]}"' in qml and 'value="0"' not in qml
    assert (out / "mosaics" / f"{key}.qml").read_text() == qml  # QGIS applies a same-name sidecar
    index = list(csv.DictReader((out / "index.csv").open()))
    assert [r["path"] for r in index] == paths
    assert (tmp_path / "mosaic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reruns_write_the_same_bytes(world, tmp_path):
    root, paths, _ = world

    def digests(out: Path) -> dict[str, str]:
        return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.rglob("*")) if p.is_file()}

    _run(root, paths[:3], tmp_path / "a")
    _run(root, paths[:3], tmp_path / "b")
    assert digests(tmp_path / "a") == digests(tmp_path / "b") and len(digests(tmp_path / "a")) > 5


def _pop_attributes(group) -> dict:
    """crs/transform removed from wherever the writer put them (the group or the variable labels)."""
    found = {}
    for owner in (group, group["labels"]):
        for name in ("crs", "transform"):
            if name in owner.ncattrs():
                found[name] = owner.getncattr(name)
                owner.delncattr(name)
    return found


def _move_attributes_to_variable(src: Path, dst: Path, drop_transform: bool = False) -> None:
    """The published S4A layout: crs/transform on the variable labels/labels, not on the group."""
    shutil.copy(src, dst)
    with netCDF4.Dataset(dst, "a") as ds:
        found = _pop_attributes(ds["labels"])
        ds["labels"]["labels"].setncattr("crs", found["crs"])
        if not drop_transform:
            ds["labels"]["labels"].setncattr("transform", found["transform"])


def _move_attributes_to_group(src: Path, dst: Path) -> None:
    """Copies made by other tools: crs/transform on the group."""
    shutil.copy(src, dst)
    with netCDF4.Dataset(dst, "a") as ds:
        ds["labels"].setncatts(_pop_attributes(ds["labels"]))


def test_grid_read_from_the_variable_the_group_or_the_coordinates(world, tmp_path):
    root, paths, _ = world
    source = root / "netcdf" / paths[0]
    reference = read_patch_grid(source)
    for layout in ("variable", "group", "coordinates"):
        copy = tmp_path / f"{layout}_{Path(paths[0]).name}"
        if layout == "group":
            _move_attributes_to_group(source, copy)
        else:
            _move_attributes_to_variable(source, copy, drop_transform=layout == "coordinates")
        grid = read_patch_grid(copy)
        assert grid.crs == reference.crs and (grid.height, grid.width) == (reference.height, reference.width)
        assert grid.transform.almost_equals(reference.transform)
    broken = tmp_path / Path(paths[0]).name
    shutil.copy(source, broken)
    with netCDF4.Dataset(broken, "a") as ds:
        _pop_attributes(ds["labels"])
    with pytest.raises(GridError, match=rf"{broken.name}: labels: attribute 'crs' missing"):
        read_patch_grid(broken)


def test_a_patch_without_medians_is_a_clear_error(world, tmp_path):
    root, paths, _ = world
    with pytest.raises(GridError, match="2019_31TCG_patch_01_01.nc: cannot open as netCDF"):
        _run(root, [paths[0], "2019/31TCG/2019_31TCG_patch_01_01.nc"], tmp_path / "x")
    with pytest.raises(ValueError, match="does not match 'YYYY_TILE_patch_XX_YY.nc'"):
        _run(root, [paths[0], "2019/31TCG/field.nc"], tmp_path / "x")
    with pytest.raises(PredictError, match="no patches"):
        _run(root, [], tmp_path / "y")
    assert not (tmp_path / "x").exists()


def _folder_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m cropseg.predict.folder ARGS`` with this checkout's package first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "cropseg.predict.folder", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_folder_command_on_an_s4a_folder(world, tmp_path):
    root, paths, _ = world
    folder = tmp_path / "s4a"
    folder.mkdir()
    for relpath in paths[:2]:  # the published layout, flat folder
        _move_attributes_to_variable(root / "netcdf" / relpath, folder / Path(relpath).name)
    (tmp_path / "params.yaml").write_text("medians: {workers: 1}\ntrain: {physical_batch_size: 3, batch_size: 3, "
                                          "device: cpu, precision: '32'}\n")
    done = _folder_command("--params", "params.yaml", "--model", str(root / "model.pt"), "--patches", str(folder),
                           "--out", "maps", "--preview", "", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("predict: 2 patches")
    for relpath in paths[:2]:  # each patch predicted whole, as the reference: the same bits
        with rasterio.open(tmp_path / "maps" / cog_relpath(relpath)) as cog, \
                rasterio.open(_run_reference(root, relpath, tmp_path)) as ref:
            np.testing.assert_array_equal(cog.read(), ref.read())
    bad = _folder_command("--params", "params.yaml", "--model", str(root / "model.pt"),
                          "--patches", str(tmp_path / "empty"), "--out", "none", cwd=tmp_path)
    missing_out = _folder_command("--patches", str(folder), cwd=tmp_path)  # never into the stage's data/predictions
    assert missing_out.returncode == 2 and "--out" in missing_out.stderr
    assert bad.returncode == 1 and "predict: error:" in bad.stderr and "empty" in bad.stderr


def test_patches_of_one_window_are_mapped_without_seam_numbers(world, tmp_path):
    """A 61-px patch is one window: no sub-patch grid inside it, so no seams to measure (not a crash)."""
    root, _, _ = world
    fetch_s4a(tiny_data(patches=2, patch_size=61, acquisitions=8), tmp_path / "netcdf", workers=1)
    run_medians(tmp_path / "netcdf", tmp_path / "medians", Medians(workers=1), progress=False)
    paths = sorted(p.relative_to(tmp_path / "netcdf").as_posix() for p in (tmp_path / "netcdf").rglob("*.nc"))
    result = predict_patches(model_path=root / "model.pt", medians=tmp_path / "medians", netcdf=tmp_path / "netcdf",
                             patch_list=paths, out=tmp_path / "maps", preview=None, metrics=tmp_path / "metrics.json", device="cpu",
                             precision="32", label_set_name="s4a11", progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert result.patches == 2 and metrics["patches"] == 2 and metrics["parcels"]["n_parcels"] > 0
    assert not any(key.startswith("seams") for key in metrics) and "seams:" not in result.line()
    for relpath in paths:
        with rasterio.open(tmp_path / "maps" / cog_relpath(relpath)) as cog:
            assert cog.shape == (61, 61)


def test_stage_points_patches_to_the_folder_command(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "stages" / "predict.py"), "--patches", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2 and "python -m cropseg.predict.folder --patches" in done.stderr


def _run_reference(root: Path, relpath: str, tmp_path: Path) -> Path:
    out = tmp_path / f"ref_{Path(relpath).stem}"
    _run(root, [relpath], out)
    return out / cog_relpath(relpath)


# --------------------------------------------------------------------------- parcels, unlabelled files, QGIS


def test_parcel_geopackage_covers_the_parcel_raster_and_declares_the_labels(world, tmp_path):
    import geopandas as gpd
    import pandas as pd
    from rasterio.features import rasterize

    root, paths, _ = world
    result = _run(root, paths, tmp_path / "out", metrics=tmp_path / "metrics.json")
    label_set = load_label_set("s4a11")
    gpkgs = sorted((tmp_path / "out" / "parcels").glob("*.gpkg"))
    assert [g.stem for g in gpkgs] == sorted({"_".join(Path(p).name.split("_")[:2]) for p in paths})
    rows = 0
    for gpkg in gpkgs:
        frame = gpd.read_file(gpkg, layer="parcels", engine="pyogrio")
        table = pd.read_csv(gpkg.with_suffix(".csv"))
        assert list(frame.drop(columns="geometry").columns) == list(table.columns)
        assert frame.crs is not None and frame.geometry.is_valid.all()
        for stem, part in frame.groupby("patch"):
            relpath = next(p for p in paths if Path(p).stem == stem)
            grid = read_patch_grid(root / "netcdf" / relpath)
            assert frame.crs == grid.crs
            with netCDF4.Dataset(root / "netcdf" / relpath) as ds:
                ids = np.asarray(ds["parcels"]["parcels"][:]).astype(np.int64)
                declared = label_set.map(np.asarray(ds["labels"]["labels"][:]))
            # the polygons, burnt back onto the patch grid, are the parcel raster pixel for pixel
            burnt = rasterize(zip(part.geometry, part.parcel_id), out_shape=ids.shape, transform=grid.transform,
                              fill=0, dtype="int64")
            np.testing.assert_array_equal(burnt, ids)
            assert sorted(part.parcel_id) == sorted(np.unique(ids[ids > 0]).tolist())
            for row in part.itertuples():  # the declared class is the labels' class on every pixel of the parcel
                assert set(np.unique(declared[ids == row.parcel_id]).tolist()) == {row.declared}
                assert row.pixels == (ids == row.parcel_id).sum() and row.declared_share == 1.0
                assert row.declared_name == label_set.class_names[row.declared]
        suspects = frame[frame.suspect].sort_values("suspect_rank")
        assert (frame.suspect_rank > 0).sum() == len(suspects)
        assert suspects.confidence.is_monotonic_decreasing and (suspects.confidence > SUSPECT_THRESHOLD).all()
        assert set(frame.agreement) <= {"agree", "disagree", "suspect", "undeclared"}
        rows += len(frame)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["parcels"]["rows"] == rows > 0 and result.metrics == metrics
    assert set(metrics["seams"]) >= {"edge_disagreement", "inside_disagreement", "difference_low", "difference_high"}
    style = (tmp_path / "out" / "parcels" / f"{gpkgs[0].stem}.qml").read_text()
    assert 'attr="agreement"' in style and 'value="suspect"' in style


def test_an_unlabelled_s4a_folder_is_mapped_end_to_end(world, tmp_path):
    root, paths, _ = world
    folder = tmp_path / "season"
    folder.mkdir()
    for relpath in paths[:2]:
        copy_without_groups(root / "netcdf" / relpath, folder / Path(relpath).name)
        with netCDF4.Dataset(folder / Path(relpath).name) as ds:
            assert "labels" not in ds.groups and "parcels" not in ds.groups
    (tmp_path / "params.yaml").write_text("medians: {workers: 1}\ntrain: {device: cpu, precision: '32'}\n")
    done = _folder_command("--params", "params.yaml", "--model", str(root / "model.pt"), "--patches", str(folder),
                           "--out", "maps", "--preview", "preview.png", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("predict: 2 patches") and "parcels" not in done.stdout
    out = tmp_path / "maps"
    assert not (out / "parcels").exists()  # no parcels in the files: no parcel layer
    for relpath in paths[:2]:  # the same bands give the same map as the labelled file
        with rasterio.open(out / cog_relpath(relpath)) as cog, \
                rasterio.open(_run_reference(root, relpath, tmp_path)) as ref:
            np.testing.assert_array_equal(cog.read(), ref.read())
            assert cog.crs == ref.crs and cog.transform == ref.transform
    assert all(r["parcels"] == "0" for r in csv.DictReader((out / "index.csv").open()))
    assert "parcels_" not in (out / "cropseg.qgs").read_text() and "mosaic_" in (out / "cropseg.qgs").read_text()

    # anything else missing is still a clear error naming the file and the group
    broken = tmp_path / "broken"
    broken.mkdir()
    copy_without_groups(root / "netcdf" / paths[0], broken / Path(paths[0]).name, drop=("labels", "parcels", "B03"))
    bad = _folder_command("--params", "params.yaml", "--model", str(root / "model.pt"), "--patches", str(broken),
                          "--out", "none", cwd=tmp_path)
    assert bad.returncode == 1 and Path(paths[0]).name in bad.stderr and "band group 'B03' missing" in bad.stderr
    assert "labels" not in bad.stderr.split("B03")[0].split(Path(paths[0]).name)[-1]


def test_qgis_opens_the_project_and_every_layer(world, tmp_path):
    """The project opens in QGIS (headless) from a moved copy of the folder: relative paths, valid layers."""
    from qgis_check import find_qgis_python

    python = find_qgis_python()
    if python is None:
        print("SKIPPED: QGIS's Python bindings (Debian: apt-get install qgis python3-qgis) are not installed")
        pytest.skip("QGIS (python3-qgis) is not installed: the project file cannot be opened here")
    root, paths, _ = world
    _run(root, paths, tmp_path / "written")
    shutil.move(tmp_path / "written", tmp_path / "moved")  # relative paths: the project works anywhere
    done = subprocess.run([python, str(REPO / "tests" / "qgis_check.py"), str(tmp_path / "moved" / "cropseg.qgs")],
                          capture_output=True, text=True, env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
                          timeout=300)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    tile_years = sorted({"_".join(Path(p).name.split("_")[:2]) for p in paths})
    assert report["invalid"] == [] and report["layers"] == 2 * len(tile_years)
    assert sorted(report["renderers"]) == sorted(["categorizedSymbol"] * len(tile_years)
                                                 + ["paletted"] * len(tile_years))
    assert report["categorized_on"] == ["agreement"] * len(tile_years) and report["labels_enabled"]
    assert all(n > 0 for n in report["features"])
