"""The evaluate stage: metrics checked against scikit-learn, orientation, per-patch sums, stitching, a tiny run."""

import json
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from cropseg.evaluate.stage import CleanTruth, EvaluatePaths, confusion_rows, evaluate, patch_table, per_class_table
from cropseg.nn.scoring import CROP_BORDER, SplitConfusion
from cropseg.medians.subpatches import PatchCanvas, cut, stitch
from cropseg.split.labels import LabelSet

from conftest import tiny_data

N_CLASSES = 6


def _sklearn(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Reference scores over labelled pixels (target > 0), scikit-learn defaults."""
    keep = target > 0
    t, p = target[keep], pred[keep]
    return {"accuracy": accuracy_score(t, p), "weighted_f1": f1_score(t, p, average="weighted"),
            "macro_f1": f1_score(t, p, average="macro")}


def _random_split(seed: int, ignored: bool, n_patches: int = 3, per_patch: int = 4, size: int = 16):
    rng = np.random.default_rng(seed)
    n = n_patches * per_patch
    target = rng.integers(0 if ignored else 1, N_CLASSES, size=(n, size, size))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, N_CLASSES, size=target.shape))
    return pred, target


def _accumulate(pred: np.ndarray, target: np.ndarray, per_patch: int, order: np.ndarray, batch: int = 5):
    confusion = SplitConfusion(N_CLASSES, len(pred) // per_patch, per_patch)
    for start in range(0, len(order), batch):
        rows = order[start:start + batch]
        confusion.update(torch.from_numpy(rows), torch.from_numpy(pred[rows]), torch.from_numpy(target[rows]))
    confusion.sync()
    return confusion


@pytest.mark.parametrize("ignored", [False, True], ids=["all_labelled", "with_ignored"])
def test_metrics_equal_sklearn(ignored):
    pred, target = _random_split(1 + ignored, ignored)
    if ignored:
        assert (target == 0).any() and (pred == 0).any()  # background pixels ignored, background predictions wrong
    order = np.random.default_rng(0).permutation(len(pred))  # batches in any order give the same result
    values = _accumulate(pred, target, 4, order).headline()
    b = CROP_BORDER
    expected = _sklearn(pred, target)
    expected |= {f"crop5_{k}": v for k, v in _sklearn(pred[:, b:-b, b:-b], target[:, b:-b, b:-b]).items()}
    assert values.keys() == expected.keys()
    for key in expected:
        assert values[key] == pytest.approx(expected[key], abs=1e-12), key


def test_confusion_orientation(tmp_path):
    """Rows are the truth, columns the prediction, in the matrix, the CSVs and the per-class table."""
    label_set = LabelSet.from_dict({"name": "t", "classes": [{"name": "wheat", "codes": [1]},
                                                             {"name": "maize", "codes": [2]}]})
    target = torch.full((2, 12, 12), 1)
    pred = torch.full((2, 12, 12), 2)
    pred[1] = 1  # second sample right
    confusion = SplitConfusion(3, 1, 2)
    confusion.update(torch.tensor([0, 1]), pred, target)
    matrix = confusion.full.matrix.numpy()
    assert matrix[1, 2] == 144 and matrix[1, 1] == 144 and matrix.sum() == 288
    np.testing.assert_array_equal(matrix, confusion_matrix(target.ravel(), pred.ravel(), labels=[0, 1, 2]))
    rows = confusion_rows(matrix, label_set.class_names)
    assert set(map(tuple, rows[["actual", "predicted"]].values)) == {("01 wheat", "01 wheat"), ("01 wheat", "02 maize")}
    assert (rows["predicted"] == "02 maize").sum() == 500  # per mille of the true class
    table = per_class_table(confusion, None, label_set).set_index("name")
    assert table.loc["wheat", "recall"] == 0.5 and table.loc["wheat", "precision"] == 1.0
    assert table.loc["maize", "support"] == 0 and table.loc["maize", "predicted"] == 144


def test_patch_scores_add_up_to_global_counts():
    pred, target = _random_split(7, ignored=True, n_patches=4, per_patch=3)
    order = np.random.default_rng(1).permutation(len(pred))
    confusion = _accumulate(pred, target, 3, order)
    torch.testing.assert_close(confusion.patches.sum(0), confusion.full.matrix)

    class Split:  # the two attributes patch_table reads of a dataset
        records = [{"path": f"p{i}.nc"} for i in range(4)]

    table = patch_table(confusion, None, Split(), None)
    matrix = confusion.full.matrix.numpy()
    assert table["pixels"].sum() == matrix.sum() == (target > 0).sum()
    assert table["correct"].sum() == np.trace(matrix)
    for p in range(4):
        expected = _sklearn(pred[3 * p:3 * p + 3], target[3 * p:3 * p + 3])
        for key, value in expected.items():
            assert table.loc[p, key] == pytest.approx(value, abs=1e-12)


def test_stitching_places_sub_patches_where_they_came_from():
    full = np.arange(3 * 18 * 12).reshape(3, 18, 12)  # (channels, y, x), 3 x 2 windows of 6
    windows = cut(full, 6)
    assert windows.shape == (3, 2, 3, 6, 6)
    for y in range(3):
        for x in range(2):
            np.testing.assert_array_equal(windows[y, x], full[:, 6 * y:6 * y + 6, 6 * x:6 * x + 6])
    np.testing.assert_array_equal(stitch(windows), full)

    # the canvas puts samples of a split (global index p * per_patch + sub_y * sub_x_count + sub_x) in place
    maps = [np.arange(18 * 12).reshape(18, 12) + 1000 * p for p in range(3)]
    samples = np.stack([cut(m, 6).reshape(6, 6, 6) for m in maps]).reshape(18, 6, 6)
    canvas = PatchCanvas([0, 2], per_patch=6, sub_x=2, window=6)
    order = np.random.default_rng(0).permutation(18)
    for rows in np.array_split(order, 4):
        canvas.add(torch.from_numpy(rows), torch.from_numpy(samples[rows]))
    np.testing.assert_array_equal(canvas.full(0), maps[0])
    np.testing.assert_array_equal(canvas.full(2), maps[2])


def test_evaluate_end_to_end(tmp_path):
    """fetch -> medians -> an untrained model -> evaluate: files, metrics vs scikit-learn, clean truth, previews."""
    from cropseg.nn.checkpoint import model_file, save_atomic
    from cropseg.nn.dataset import SubPatchDataset
    from cropseg.fetch.stage import fetch_s4a
    from cropseg.split.labels import load_label_set
    from cropseg.medians.stage import run_medians
    from cropseg.nn.models import build_model
    from cropseg.core.params import Loader, Medians

    netcdf = tmp_path / "netcdf"
    fetch_s4a(tiny_data(patches=2, patch_size=122, mislabelled=0.3), netcdf, workers=1)
    run_medians(netcdf, tmp_path / "medians", Medians(workers=1), progress=False)
    paths = sorted(p.relative_to(netcdf).as_posix() for p in netcdf.rglob("*.nc"))
    (tmp_path / "test.txt").write_text("\n".join(paths) + "\n")
    pd.DataFrame({"path": paths, "tile": ["31TCG", "31TCJ"], "year": [2019, 2019],
                  "elevation_mean": [100.0, 200.0]}).to_csv(tmp_path / "patches.csv", index=False)

    label_set = load_label_set("s4a11")
    loader = Loader(months=[4, 9])
    torch.manual_seed(0)
    model = build_model("unet", bands=4, months=6, n_classes=label_set.n_classes, width=4, depth=1)
    with torch.no_grad():  # a map with more than one class, so that whole-patch and per-tile paths can differ
        model.head.weight.normal_(0, 2.0)
    from cropseg.nn.precise_bn import recalibrate
    from cropseg.nn.precision import FP32

    calibration = SubPatchDataset(tmp_path / "medians", paths, label_set, months=[4, 9], normalize=loader.normalize,
                                  skip_empty=False)
    recalibrate(model, calibration, np.arange(len(calibration)), batch_size=4, device=torch.device("cpu"),
                precision=FP32)
    save_atomic(model_file(model, arch="unet", model_config=model.config, label_set=label_set.to_dict(),
                           loader=loader.model_dump(), metrics={"weighted_f1": 0.5}, epoch=3),
                tmp_path / "model.pt")

    # two snapshots of a learning curve (the same weights at two samples-seen points) and the same
    # file as the irreducible-loss model: both must score exactly as the model does on clean labels
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    for point, seen in ((1, 40), (2, 80)):
        content = torch.load(tmp_path / "model.pt", weights_only=True)
        save_atomic({**content, "counters": {"samples_seen": seen}}, snapshots / f"seen_{seen:09d}.pt")
    (snapshots / "index.json").write_text(json.dumps([{"file": f"seen_{s:09d}.pt", "point": k, "samples_seen": s,
                                                        "step": s // 4} for k, s in ((1, 40), (2, 80))]))
    out = tmp_path / "evaluate"
    result = evaluate(EvaluatePaths(model=tmp_path / "model.pt", medians=tmp_path / "medians",
                                    split=tmp_path / "test.txt", patches=tmp_path / "patches.csv",
                                    clean=netcdf / "truth" / "clean_labels", out=out, snapshots=snapshots,
                                    holdout_model=tmp_path / "model.pt", netcdf=netcdf),
                      label_set_name="s4a11", device="cpu", precision="32", batch_size=3, previews=2,
                      progress=False)
    assert result.line().startswith("evaluate: 2 test patches")
    assert sorted(result.files) == sorted(["metrics.json", "per_class.csv", "confusion.csv", "confusion_matrix.csv",
                                           "patch_scores.csv", "confusion.png", "per_class_f1.png", "previews.png",
                                           "report.md", "curve.csv"])

    # independent reference: the model over every sub-patch, scored by scikit-learn
    dataset = SubPatchDataset(tmp_path / "medians", paths, label_set, months=[4, 9], normalize=loader.normalize,
                              skip_empty=False)
    assert dataset.per_patch == 4  # 122 px = 2 x 2 windows of 61: stitching matters
    batch = dataset[list(range(len(dataset)))]
    with torch.no_grad():  # each patch whole (the predict stage's maps), cut back into the sample order
        whole = [stitch(batch.x[p * 4:(p + 1) * 4].numpy().reshape(2, 2, *batch.x.shape[1:])) for p in range(2)]
        maps = [model.eval()(torch.from_numpy(np.ascontiguousarray(x))[None])[0].argmax(0).numpy() for x in whole]
        pred = np.concatenate([cut(m, 61).reshape(4, 61, 61) for m in maps])
        # the learning curve and the holdout model are still scored per sub-patch (batched: cheap)
        tiles = torch.cat([model(batch.x[i:i + 3]).argmax(1) for i in range(0, len(dataset), 3)]).numpy()
    assert (tiles != pred).any()  # the two paths differ near sub-patch edges
    clean = CleanTruth(dataset, netcdf / "truth" / "clean_labels", label_set).labels(batch.index).numpy()
    assert (clean != batch.y.numpy()).any()  # label noise: the clean truth differs from the labels
    metrics = json.loads((out / "metrics.json").read_text())
    b = CROP_BORDER
    for block, truth in (("test", batch.y.numpy()), ("clean", clean)):
        expected = _sklearn(pred, truth) | {f"crop5_{k}": v for k, v in
                                            _sklearn(pred[:, b:-b, b:-b], truth[:, b:-b, b:-b]).items()}
        for key, value in expected.items():
            assert metrics[block][key] == pytest.approx(value, abs=1e-9), (block, key)
        assert metrics[block]["n_pixels"] == (truth > 0).sum()
    assert metrics["n_patches"] == 2 and metrics["model"] == {"epoch": 3, "val_weighted_f1": 0.5}
    curve = pd.read_csv(out / "curve.csv")
    assert list(curve.samples_seen) == [40, 80] and list(curve.point) == [1, 2]
    per_tile = _sklearn(tiles, clean)
    for key in ("accuracy", "weighted_f1", "macro_f1"):
        assert curve[key].tolist() == pytest.approx([per_tile[key]] * 2, rel=1e-5)  # CSV: 6 digits
        assert metrics["holdout_model"][key] == pytest.approx(per_tile[key], abs=1e-12)
    assert metrics["curve"] == {"auc_weighted_f1": pytest.approx(per_tile["weighted_f1"]),
                                "final_weighted_f1": pytest.approx(per_tile["weighted_f1"]),
                                "final_macro_f1": pytest.approx(per_tile["macro_f1"]),
                                "samples_seen": 80, "points": 2, "against": "clean"}
    assert metrics["holdout_model"]["against"] == "clean"

    # parcel-level scores: one vote per declared parcel (id > 0, declared class > 0) of the netCDF files
    declared_parcels = 0
    for relpath in paths:
        with netCDF4.Dataset(netcdf / relpath) as handle:
            ids, codes = np.asarray(handle["parcels"]["parcels"][:]), np.asarray(handle["labels"]["labels"][:])
        mapped = label_set.map(codes)
        declared_parcels += len(np.unique(ids[(ids > 0) & (mapped > 0)]))
    assert metrics["parcels"]["n_parcels"] == declared_parcels > 0
    assert 0.0 <= metrics["parcels"]["accuracy"] <= 1.0 and "parcels:" in result.line()
    # `suspect` follows the threshold it is given (params predict.suspect_threshold): at 0 every contradicted
    # declaration is suspect, at 1 none
    wrong = round(metrics["parcels"]["n_parcels"] * (1 - metrics["parcels"]["accuracy"]))
    for threshold, expected in ((0.0, wrong), (1.0, 0)):
        again = evaluate(EvaluatePaths(model=tmp_path / "model.pt", medians=tmp_path / "medians",
                                       split=tmp_path / "test.txt", patches=tmp_path / "patches.csv",
                                       out=tmp_path / f"suspect_{threshold}", netcdf=netcdf,
                                       clean=tmp_path / "none", snapshots=tmp_path / "none",
                                       holdout_model=tmp_path / "none.pt"),
                         label_set_name="s4a11", device="cpu", precision="32", batch_size=3, previews=0,
                         suspect_threshold=threshold, progress=False)
        assert again.metrics["parcels"]["suspect"] == expected and wrong > 0

    # the stitched clean map is the generator's file; the stitched labels are the netCDF's
    first = np.load(netcdf / "truth" / "clean_labels" / f"{Path(paths[0]).stem}.npy")
    np.testing.assert_array_equal(stitch(clean[:4].reshape(2, 2, 61, 61)), label_set.map(first))
    with netCDF4.Dataset(netcdf / paths[0]) as handle:
        labels = np.asarray(handle["labels"]["labels"][:])
    np.testing.assert_array_equal(stitch(batch.y.numpy()[:4].reshape(2, 2, 61, 61)), label_set.map(labels))

    scores = pd.read_csv(out / "patch_scores.csv")
    assert list(scores["path"]) == paths and scores["pixels"].sum() == metrics["test"]["n_pixels"]
    assert list(scores["elevation_mean"]) == [100.0, 200.0] and "clean_weighted_f1" in scores
    per_class = pd.read_csv(out / "per_class.csv")
    assert per_class["support"].sum() == metrics["test"]["n_pixels"] and len(per_class) == label_set.n_classes - 1
    confusion = pd.read_csv(out / "confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) > 0
    report = (out / "report.md").read_text()
    for image in ("confusion.png", "per_class_f1.png", "previews.png"):
        assert f"]({image})" in report
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
