"""The training loop on tiny real data: determinism, resume after kill -9, stale checkpoints,
weights-only model files, gradient accumulation, DDP with gloo, and the loader contract."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cropseg.nn.checkpoint import load_model
from cropseg.nn.precision import FP32
from cropseg.nn.dataset import BlockSampler, SubPatchDataset, read_split_list
from cropseg.fetch.stage import fetch_s4a
from cropseg.split.labels import load_label_set
from cropseg.medians.stage import run_medians
from cropseg.medians.store_reader import open_patch
from cropseg.core.params import Medians, parse_params
from cropseg.train.loop import RunPaths, train

from conftest import tiny_data

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "configs" / "labels"
UNIFORM = {"method": "uniform", "block_size": 1}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """data/medians and data/split of 6 tiny synthetic patches (122 px: 2 x 2 sub-patches each)."""
    root = tmp_path_factory.mktemp("train")
    fetch_s4a(tiny_data(patches=6, patch_size=122, acquisitions=14, mislabelled=0.2), root / "netcdf", workers=1)
    run_medians(root / "netcdf", root / "medians", Medians(workers=1), progress=False)
    patches = sorted(p.relative_to(root / "netcdf").as_posix() for p in (root / "netcdf").rglob("*.nc"))
    split = root / "split"
    split.mkdir()
    (split / "train.txt").write_text("\n".join(patches[:4]) + "\n")
    (split / "val.txt").write_text("\n".join(patches[4:]) + "\n")
    return root


def _params(**overrides) -> object:
    # the tiny split lacks classes of s4a11: the guard (tested below) is waived
    run = {"epochs": 3, "batch_size": 4, "physical_batch_size": 4, "precision": "32", "lr": 0.01,
           "allow_degenerate_split": True}
    run.update(overrides.pop("run", {}))
    raw = {"model": {"arch": "unet", "width": 4, "depth": 2}, "train": run, "holdout": run,
           "tracking": {"wandb": "disabled"}, "loader": {"months": [3, 10]}, "selection": UNIFORM}
    raw.update(overrides)
    return parse_params(raw)


def _paths(workspace: Path, out: Path) -> RunPaths:
    return RunPaths(split_dir=workspace / "split", model_out=out / "model.pt", metrics_dir=out / "metrics",
                    checkpoint_dir=out / "checkpoints", medians=workspace / "medians", labels_dir=LABELS,
                    truth=workspace / "netcdf" / "truth" / "truth.csv")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_training_is_deterministic_and_logs_counters(workspace, tmp_path):
    a = train(_params(), "train", _paths(workspace, tmp_path / "a"), progress=False)
    b = train(_params(), "train", _paths(workspace, tmp_path / "b"), progress=False)
    assert a.history == b.history
    for name, tensor in _weights(tmp_path / "a" / "model.pt").items():
        assert torch.equal(tensor, _weights(tmp_path / "b" / "model.pt")[name]), name
    samples = len(SubPatchDataset(workspace / "medians", read_split_list(workspace / "split" / "train.txt"),
                                  load_label_set("s4a11", LABELS), months=[3, 10], normalize=1e4, skip_empty=True))
    assert a.counters.samples_seen == a.counters.samples_considered == 3 * samples
    assert a.counters.step == 3 * -(-samples // 4)
    metrics = json.loads((tmp_path / "a" / "metrics" / "metrics.json").read_text())
    assert metrics["samples_seen"] == 3 * samples
    assert metrics["best"]["weighted_f1"] == pytest.approx(a.best["weighted_f1"])
    steps = (tmp_path / "a" / "metrics" / "steps.csv").read_text().splitlines()
    assert steps[0].startswith("step,epoch,samples_seen,samples_considered,pixels_seen,loss")
    assert len(steps) == 1 + a.counters.step
    # the synthetic truth (mislabelled 0.2) is matched to the samples: the step rows carry noise shares
    assert "noisy_share_block" in steps[0]
    # ... and the values: uniform trains on whole blocks, so selected == block at every step, and the
    # run's share (metrics.json, the whole run's pixels) is that of the training patches' truth in model-class
    # space: pixels whose label s4a11 maps to a class, noisy where the clean code maps to another one
    shares = pd.read_csv(tmp_path / "a" / "metrics" / "steps.csv")
    assert shares.noisy_share_block.between(0, 1).all()
    assert (shares.noisy_share_selected == shares.noisy_share_block).all()
    truth = pd.read_csv(workspace / "netcdf" / "truth" / "truth.csv")
    truth = truth[truth.path.isin((workspace / "split" / "train.txt").read_text().split())]
    label_set = load_label_set("s4a11", LABELS)
    label, clean = label_set.map(truth.label_code.to_numpy()), label_set.map(truth.clean_code.to_numpy())
    seen = label > 0
    expected = truth.pixels[seen & (label != clean)].sum() / truth.pixels[seen].sum()
    code_space = truth.pixels[truth.label_code != truth.clean_code].sum() / truth.pixels.sum()
    run_shares = metrics["selection"]
    selected, considered = run_shares["noisy_share_selected"], run_shares["noisy_share_block"]
    assert 0 < selected == considered < 1
    assert selected == pytest.approx(expected, rel=1e-6)
    assert abs(expected - code_space) > 1e-3  # s4a11 drops and keeps codes: the two spaces differ here


def test_gradient_accumulation_matches_one_big_batch(workspace, tmp_path):
    """ConvSTAR (no BatchNorm): 4 micro-batches of 1 give the weights of 1 batch of 4."""
    model = {"arch": "convstar", "width": 4, "depth": 1}
    whole = train(_params(model=model, run={"epochs": 1}), "train", _paths(workspace, tmp_path / "whole"), progress=False)
    micro = train(_params(model=model, run={"epochs": 1, "physical_batch_size": 1}), "train",
                  _paths(workspace, tmp_path / "micro"), progress=False)
    assert whole.counters.step == micro.counters.step
    for name, tensor in _weights(tmp_path / "whole" / "model.pt").items():
        torch.testing.assert_close(_weights(tmp_path / "micro" / "model.pt")[name], tensor, rtol=1e-4, atol=1e-5)


def test_model_file_loads_weights_only_and_predicts(workspace, tmp_path):
    train(_params(run={"epochs": 1}), "train", _paths(workspace, tmp_path), progress=False)
    content = torch.load(tmp_path / "model.pt", weights_only=True)
    assert content["labels"]["name"] == "s4a11" and content["loader"]["months"] == [3, 10]
    model, _ = load_model(tmp_path / "model.pt")
    dataset = SubPatchDataset(workspace / "medians", read_split_list(workspace / "split" / "val.txt"),
                              load_label_set("s4a11", LABELS), months=[3, 10], normalize=1e4, skip_empty=True)
    batch = dataset[[0, 1]]
    with torch.no_grad():
        log_probs = model(batch.x)
    assert log_probs.shape == (2, 12, 61, 61)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(2, 61, 61), rtol=1e-4, atol=1e-4)


def _stage_script(workspace: Path, out: Path, params: dict) -> list[str]:
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    return [sys.executable, str(REPO / "stages" / "train.py"), "train", "--params", str(out / "params.yaml"),
            "--medians", str(workspace / "medians"), "--split", str(workspace / "split"),
            "--model", str(out / "model.pt"), "--metrics", str(out / "metrics"),
            "--checkpoints", str(out / "checkpoints"), "--truth", str(workspace / "netcdf" / "truth" / "truth.csv")]


@pytest.mark.parametrize("precision", [
    "32", pytest.param("fp16", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                        reason="fp16 needs CUDA (CPU runs refuse it)"))])
def test_resume_after_kill_ends_with_the_same_metrics(workspace, tmp_path, precision):
    # fp16: the loss scaler's state is in the checkpoint, so the resumed run scales (and skips) as the reference
    raw = {"model": {"arch": "unet", "width": 4, "depth": 2}, "tracking": {"wandb": "disabled"},
           "loader": {"months": [3, 10]}, "selection": UNIFORM,
           "train": {"epochs": 6, "batch_size": 2, "physical_batch_size": 2, "precision": precision, "lr": 0.01,
                     "allow_degenerate_split": True, "device": "auto" if precision == "32" else "cuda"}}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = tmp_path / "reference"
    reference.mkdir()
    subprocess.run(_stage_script(workspace, reference, raw), check=True, env=env, cwd=REPO, capture_output=True)

    killed = tmp_path / "killed"
    killed.mkdir()
    command = _stage_script(workspace, killed, raw)
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    checkpoint = killed / "checkpoints" / "train" / "last.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # kill -9 during the epoch after the first checkpoint
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed / "model.pt").exists()

    shutil.rmtree(killed / "metrics")  # as `dvc repro` does: it deletes a stage's outputs before running it
    resumed = subprocess.run(command, check=True, env=env, cwd=REPO, capture_output=True, text=True)
    assert "resuming after epoch" in resumed.stdout
    final = json.loads((killed / "metrics" / "metrics.json").read_text())
    expected = json.loads((reference / "metrics" / "metrics.json").read_text())
    assert final["best"] == expected["best"]
    assert final["val"] == expected["val"]
    assert final["samples_seen"] == expected["samples_seen"]
    for name, tensor in _weights(reference / "model.pt").items():
        assert torch.equal(tensor, _weights(killed / "model.pt")[name]), name
    # the curves hold each step once, as in the uninterrupted run
    assert (killed / "metrics" / "val.csv").read_text() == (reference / "metrics" / "val.csv").read_text()
    assert (killed / "metrics" / "steps.csv").read_text() == (reference / "metrics" / "steps.csv").read_text()


def test_a_changed_config_never_resumes_a_stale_checkpoint(workspace, tmp_path):
    paths = _paths(workspace, tmp_path)
    first = train(_params(run={"epochs": 1}), "train", paths, progress=False)
    assert first.resumed_from is None
    again = train(_params(run={"epochs": 2}), "train", paths, progress=False)
    assert again.resumed_from is None  # epochs changed: a different run
    same = train(_params(run={"epochs": 2}), "train", paths, progress=False)
    assert same.resumed_from == 2 and same.history == again.history


def _ddp_worker(rank: int, world_size: int, port: int, workspace: str, out: str, selection: dict) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    params = _params(model={"arch": "convstar", "width": 4, "depth": 1}, run={"epochs": 2}, selection=selection)
    train(params, "train", _paths(Path(workspace), Path(out)), progress=False)
    torch.distributed.destroy_process_group()


# block_size 3: the last block of an epoch keeps 1 sample, so one rank has no sample in that step
@pytest.mark.parametrize("selection", [UNIFORM, {"method": "loss", "block_size": 3}], ids=["uniform", "loss"])
def test_ddp_with_gloo_matches_one_process(workspace, tmp_path, selection):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(workspace), str(tmp_path / "ddp"), selection), nprocs=2, join=True)
    single = train(_params(model={"arch": "convstar", "width": 4, "depth": 1}, run={"epochs": 2}, selection=selection),
                   "train", _paths(workspace, tmp_path / "single"), progress=False)
    ddp_steps = np.genfromtxt(tmp_path / "ddp" / "metrics" / "steps.csv", delimiter=",", names=True)
    one_steps = np.genfromtxt(tmp_path / "single" / "metrics" / "steps.csv", delimiter=",", names=True)
    np.testing.assert_array_equal(ddp_steps["samples_seen"], one_steps["samples_seen"])
    np.testing.assert_array_equal(ddp_steps["samples_considered"], one_steps["samples_considered"])
    np.testing.assert_array_equal(ddp_steps["pixels_seen"], one_steps["pixels_seen"])
    np.testing.assert_allclose(ddp_steps["loss"], one_steps["loss"], rtol=1e-4)
    ddp = json.loads((tmp_path / "ddp" / "metrics" / "metrics.json").read_text())
    assert ddp["val"]["weighted_f1"] == pytest.approx(single.history[-1]["weighted_f1"], abs=1e-6)


def _selections(rank: int, world_size: int, workspace: Path, method: str) -> list[dict]:
    """Every block of one epoch through the real Selector with a fixed ConvSTAR: what this rank
    trains on, per batch, and the block's telemetry."""
    from cropseg.nn.loss import class_weights
    from cropseg.nn.models import build_model
    from cropseg.core.params import Selection
    from cropseg.selection.selector import Selector

    labels = load_label_set("s4a11", LABELS)
    dataset = SubPatchDataset(workspace / "medians", read_split_list(workspace / "split" / "train.txt"), labels,
                              months=[3, 10], normalize=1e4, skip_empty=False)
    torch.manual_seed(0)
    model = build_model("convstar", bands=dataset.bands, months=dataset.months, n_classes=labels.n_classes, width=4,
                        depth=1, class_frequencies=None)
    weights = class_weights(dataset.class_pixel_counts(), 0.1, weighted=True)
    selector = Selector(Selection(method=method, block_size=3, n_batches_per_block=2), weights=weights,
                        physical_batch_size=4, precision=FP32, device=torch.device("cpu"), seed=0, irreducible_path=None,
                        truth=None, n_classes=labels.n_classes)
    sampler = BlockSampler(len(dataset), selector.block_samples(2), seed=0, rank=rank, world_size=world_size)
    out = []
    for step, positions in enumerate(sampler):
        batches, telemetry = selector.select(model, dataset[positions], 2 // world_size, step=step, rank=rank,
                                             world_size=world_size)
        out.append({"batches": [b.index.tolist() for b in batches], "telemetry": telemetry})
    return out


def _selection_worker(rank: int, world_size: int, port: int, workspace: str, out: str, method: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    result = _selections(rank, world_size, Path(workspace), method)
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("method", ["loss", "0.5*loss + 1.0*random"])
def test_ddp_selection_takes_the_top_k_of_the_whole_block(workspace, tmp_path, method):
    """2 gloo processes keep exactly the samples 1 process keeps (the top-k of the whole block,
    not of each rank's share), split between the ranks batch by batch, with the same telemetry."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_selection_worker, args=(2, port, str(workspace), str(tmp_path), method), nprocs=2, join=True)
    single = _selections(0, 1, workspace, method)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 2  # 16 samples, blocks of 3 x 2 x 2 = 12
    for one, r0, r1 in zip(single, *ranks):
        for batch, a, b in zip(one["batches"], r0["batches"], r1["batches"]):
            assert a == batch[0::2] and b == batch[1::2]
        assert r0["telemetry"] == r1["telemetry"]
        assert r0["telemetry"] == pytest.approx(one["telemetry"], rel=1e-6)
    kept = [i for block in single for batch in block["batches"] for i in batch]
    assert len(kept) == len(set(kept)) == 4 + 1  # blocks of 12 and 4 samples: 12 / 3 and round(4 / 3) kept


def test_block_sampler_is_seeded_per_epoch_and_splits_blocks_across_ranks():
    sampler = BlockSampler(10, 4, seed=3)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and first != second
    sampler.set_epoch(0)
    assert list(sampler) == first
    ranks = [BlockSampler(10, 4, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(0)
    for block, a, b in zip(first, *ranks):
        assert sorted(a + b) == sorted(block)


def test_dataset_indices_map_to_sub_patches(workspace):
    labels = load_label_set("s4a11", LABELS)
    split = read_split_list(workspace / "split" / "train.txt")
    dataset = SubPatchDataset(workspace / "medians", split, labels, months=[4, 9], normalize=1e4, skip_empty=False)
    assert len(dataset) == 4 * 4 and dataset.months == 6 and dataset.bands == 4
    batch = dataset[[5, 0]]
    assert batch.index.tolist() == [5, 0]
    images, codes = open_patch(workspace / "medians", dataset.records[1])
    # global index 5 = second patch, sub-patch (0, 1)
    np.testing.assert_allclose(batch.x[0].numpy(), images[0, 1, 3:9] / 1e4, rtol=1e-6)
    np.testing.assert_array_equal(batch.y[0].numpy(), labels.map(codes[0, 1]))


def test_stored_irreducible_loss_equals_a_fresh_forward_of_the_holdout_model(workspace, tmp_path):
    from cropseg.selection.irreducible import run_irreducible
    from cropseg.nn.loss import class_weights, parcel_nll

    holdout = tmp_path / "holdout_split"
    holdout.mkdir()
    (holdout / "train.txt").write_text((workspace / "split" / "val.txt").read_text())
    (holdout / "val.txt").write_text((workspace / "split" / "train.txt").read_text())
    paths = _paths(workspace, tmp_path)
    paths.split_dir, paths.model_out = holdout, tmp_path / "holdout.pt"
    params = _params(run={"epochs": 1})
    train(params, "holdout", paths, progress=False)
    summary = run_irreducible(params, holdout_model=tmp_path / "holdout.pt", medians=workspace / "medians",
                              split_dir=workspace / "split", out=tmp_path / "il", progress=False)
    stored = np.load(tmp_path / "il" / "losses.npy")
    assert stored.shape == (16,) and summary.samples == 16

    labels = load_label_set("s4a11", LABELS)
    split = read_split_list(workspace / "split" / "train.txt")
    every = SubPatchDataset(workspace / "medians", split, labels, months=[3, 10], normalize=1e4, skip_empty=False)
    counts = SubPatchDataset(workspace / "medians", split, labels, months=[3, 10], normalize=1e4,
                             skip_empty=True).class_pixel_counts()
    model, _ = load_model(tmp_path / "holdout.pt")
    # the same batches as the stage (physical_batch_size, in order): normalisation uses batch statistics
    for start in range(0, len(every), params.train.physical_batch_size):
        batch = every[list(range(start, min(len(every), start + params.train.physical_batch_size)))]
        with torch.no_grad():
            weighted, weight = parcel_nll(model(batch.x), batch.y, class_weights(counts, 0.1))
        fresh = torch.where(weight > 0, weighted / weight.clamp_min(1e-12), torch.inf).numpy()
        np.testing.assert_allclose(stored[batch.index.numpy()], fresh, rtol=1e-5)
    assert np.isinf(stored).sum() == summary.without_parcels
    # the target model trains with rho_loss on those stored losses: half the samples considered are seen
    paths = _paths(workspace, tmp_path / "rho")
    paths.irreducible = tmp_path / "il"
    rho = train(_params(run={"epochs": 2}, selection={"method": "rho_loss", "block_size": 2}), "train", paths,
                progress=False)
    considered = 2 * (16 - summary.without_parcels)
    assert rho.counters.samples_considered == considered
    assert rho.counters.samples_seen == sum(max(1, round(len(b) / 2)) for b in _blocks(considered // 2, 8))
    assert "score_selected" in (tmp_path / "rho" / "metrics" / "steps.csv").read_text().splitlines()[0]



def test_wandb_runs_record_the_inputs_each_run_read(workspace, tmp_path, monkeypatch):
    """Two experiments on different training lists: each offline W&B run holds its own input hashes
    (DVC md5, as in dvc.lock), its name and group, and the model as a file artifact, staged nowhere
    but in the run's folder."""
    from cropseg.tracking.lineage import dvc_md5
    from cropseg.tracking.offline_run import read_offline_run

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "root"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # W&B's staging folder lives under it
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    runs = {}
    for name, kept in (("exp-four", 4), ("exp-three", 3)):
        monkeypatch.setenv("DVC_EXP_NAME", name)
        split = tmp_path / name / "split"
        split.mkdir(parents=True)
        (split / "train.txt").write_text("".join(read_split_list(workspace / "split" / "train.txt")[:kept][i] + "\n"
                                                 for i in range(kept)))
        shutil.copy(workspace / "split" / "val.txt", split / "val.txt")
        paths = _paths(workspace, tmp_path / name)
        paths.split_dir = split
        train(_params(run={"epochs": 1}, tracking={"wandb": "offline"}), "train", paths, progress=False)
        (folder,) = set((tmp_path / "root" / "wandb").glob("offline-run-*")) - set(runs.values())
        runs[name] = folder
    for name, folder in runs.items():
        run = read_offline_run(folder)
        assert (run["name"], run["group"], run["job_type"]) == (f"{name}-train", name, "train")
        inputs = run["config"]["dvc_inputs"]
        split = tmp_path / name / "split"
        assert inputs[str(split / "train.txt")] == dvc_md5(split / "train.txt")
        assert inputs[str(workspace / "medians")] == dvc_md5(workspace / "medians")
        assert inputs[str(workspace / "medians")].endswith(".dir")
        assert run["config"]["params"]["loss"]["class_weights_weight"] == 0.1
        assert run["config"]["git"]["revision"] and run["config"]["code_digest"]
        assert run["summary"]["wall_time_s"] > 0 and "wall_time_s" not in (tmp_path / name / "metrics" /
                                                                            "metrics.json").read_text()
        model = run["artifacts"]["train-model"]
        assert model["metadata"]["md5"] == dvc_md5(tmp_path / name / "model.pt")
        assert Path(model["entries"]["model.pt"]["local_path"]).is_relative_to(folder)
    train_hashes = {read_offline_run(f)["config"]["dvc_inputs"][str(tmp_path / n / "split" / "train.txt")]
                    for n, f in runs.items()}
    assert len(train_hashes) == 2
    assert not list((tmp_path / "xdg").rglob("staging/*"))


def test_train_refuses_a_split_without_a_class_in_train_or_with_one_class_in_val(workspace, tmp_path):
    paths = _paths(workspace, tmp_path)
    with pytest.raises(ValueError, match="no training pixel: sorghum, oats, sunflower, potatoes, peas.*"
                                         "train.allow_degenerate_split"):
        train(_params(run={"epochs": 1, "allow_degenerate_split": False}), "train", paths, progress=False)
    assert not paths.model_out.exists()
    # crop_presence (crop / non_crop / unknown): no `unknown` pixel anywhere, and val is refused too
    # when it holds crop pixels only
    from cropseg.split.guards import split_problems

    problems = split_problems([0, 500, 40, 0], [0, 99, 0, 0], ("background", "crop", "non_crop", "unknown"))
    assert problems == ["1 class(es) of the label set have no training pixel: unknown",
                        "the val split holds 1 class(es) (crop): val F1 cannot tell a model from a constant "
                        "prediction"]
    assert split_problems([0, 5, 4], [0, 1, 2], ("background", "a", "b")) == []


def test_summary_line_flags_a_perfect_first_validation():
    from cropseg.train.loop import Counters, TrainResult

    flagged = TrainResult({"weighted_f1": 1.0}, 1, Counters(epoch=3), 1.0, history=[{"epoch": 1}])
    assert "warning: val weighted F1 is 1.0 at the first validation (epoch 1)" in flagged.line("train")
    fine = TrainResult({"weighted_f1": 1.0}, 2, Counters(epoch=3), 1.0, history=[{"epoch": 1}])
    assert "warning" not in fine.line("train")


def _blocks(n: int, block: int) -> list[range]:
    return [range(start, min(n, start + block)) for start in range(0, n, block)] * 2


# ---------------------------------------------------------------------------------------------
# the comparison protocol (params.protocol)

PROTOCOL = {"label_noise": 0.5, "noise_seed": 1, "samples_seen": 40, "lr_schedule": "cosine", "test_points": 4,
            "keep": "last"}


def _protocol_paths(workspace: Path, out: Path) -> RunPaths:
    return RunPaths(**{**_paths(workspace, out).__dict__, "snapshots": out / "snapshots", "truth": None})


def test_protocol_stops_at_the_budget_with_snapshots_at_equal_samples_seen(workspace, tmp_path):
    runs = {}
    for method, block in (("uniform", 1), ("loss", 2)):
        out = tmp_path / method
        params = _params(protocol=PROTOCOL, selection={"method": method, "block_size": block}, run={"epochs": 1})
        runs[method] = train(params, "train", _protocol_paths(workspace, out), progress=False)
        index = json.loads((out / "snapshots" / "index.json").read_text())
        # points 10, 20, 30, 40 of the budget, each taken at the first step (4 samples) that reaches it
        assert all(p <= e["samples_seen"] < p + 4 for p, e in zip((10, 20, 30, 40), index)) and len(index) == 4
        assert [e["point"] for e in index] == [1, 2, 3, 4]
        # the budget, not train.epochs (1), ends training; the cosine rate falls from train.lr towards 0
        assert 40 <= runs[method].counters.samples_seen < 44
        steps = pd.read_csv(out / "metrics" / "steps.csv")
        assert steps.lr.iloc[0] == pytest.approx(0.01) and steps.lr.is_monotonic_decreasing
        # each step's rate is the cosine of the samples seen before it: the same for every method
        before = steps.samples_seen.shift(1).fillna(0).to_numpy()
        expected = 0.005 * (1 + np.cos(np.pi * np.minimum(before / 40, 1)))
        np.testing.assert_allclose(steps.lr.to_numpy(), expected, rtol=1e-9)
        # keep: last -> models/model.pt holds the final weights, those of the last snapshot
        last = torch.load(out / "snapshots" / index[-1]["file"], weights_only=True)
        assert last["counters"]["samples_seen"] == runs[method].counters.samples_seen
        for name, tensor in _weights(out / "model.pt").items():
            assert torch.equal(tensor, last["state_dict"][name]), name
        metrics = json.loads((out / "metrics" / "metrics.json").read_text())
        assert "final" in metrics and "best" not in metrics
    assert runs["loss"].counters.samples_considered >= 2 * runs["uniform"].counters.samples_considered - 8


def test_protocol_noise_telemetry_is_exact_in_model_classes(workspace, tmp_path):
    """Uniform over exactly one pass: the run's noisy share is the train split's protocol noise share
    in model-class space (every parcel pixel of a noisy sample), plus the generator's own noise."""
    labels = load_label_set("s4a11", LABELS)
    from cropseg.nn.label_noise import LabelNoise

    noisy = SubPatchDataset(workspace / "medians", read_split_list(workspace / "split" / "train.txt"), labels,
                            months=[3, 10], normalize=1e4, skip_empty=True, noise=LabelNoise(0.5, 1, labels.n_classes))
    out = tmp_path / "noisy"
    params = _params(protocol={**PROTOCOL, "samples_seen": len(noisy), "test_points": 0, "lr_schedule": "constant"},
                     run={"epochs": 1})
    paths = RunPaths(**{**_protocol_paths(workspace, out).__dict__,
                        "truth": workspace / "netcdf" / "truth" / "truth.csv"})
    train(params, "train", paths, progress=False)
    selection = json.loads((out / "metrics" / "metrics.json").read_text())["selection"]
    from cropseg.selection.selector import truth_per_sample

    generator = truth_per_sample(noisy, workspace / "netcdf" / "truth" / "truth.csv")
    index = noisy.indices
    flagged = noisy.noise_shift[index] > 0
    parcel = noisy.parcel_pixels[index]
    wrong = np.where(flagged, parcel, generator["noisy"][index])
    assert 0 < flagged.mean() < 1 and generator["noisy"][index][~flagged].sum() > 0  # both kinds present
    assert selection["noisy_share_block"] == pytest.approx(wrong.sum() / parcel.sum(), rel=1e-9)
    assert selection["noisy_share_selected"] == selection["noisy_share_block"]
    # the labels trained on are those counted: the loader's noisy samples differ from the clean ones
    clean = SubPatchDataset(workspace / "medians", read_split_list(workspace / "split" / "train.txt"), labels,
                            months=[3, 10], normalize=1e4, skip_empty=True)
    batch, reference = noisy[np.flatnonzero(flagged)], clean[np.flatnonzero(flagged)]
    assert not (batch.y == reference.y)[reference.y > 0].any()


_TRAIN_WITH_THREADS = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads({machine})  # the machine's default: one thread per core
from pathlib import Path
from test_train import _params, _paths
from cropseg.train.loop import train
train(_params(run={{"cpu_threads": {fixed}, "epochs": 2}}), "holdout", _paths(Path({workspace!r}), Path({out!r})),
      progress=False)
print(torch.get_num_threads())
"""


def _train_on_cores(workspace: Path, out: Path, machine: int, fixed: int | None) -> tuple[int, dict]:
    """Train in a fresh process whose torch starts with ``machine`` threads; the weights and the threads used."""
    code = _TRAIN_WITH_THREADS.format(tests=str(REPO / "tests"), machine=machine, fixed=fixed,
                                      workspace=str(workspace), out=str(out))
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[-1]), _weights(out / "model.pt")


def test_fixed_cpu_threads_train_the_same_model_on_machines_with_other_core_counts(workspace, tmp_path):
    one_core, weights_one = _train_on_cores(workspace, tmp_path / "one", machine=1, fixed=2)
    many_cores, weights_many = _train_on_cores(workspace, tmp_path / "many", machine=3, fixed=2)
    assert one_core == many_cores == 2
    for name, tensor in weights_one.items():
        assert torch.equal(tensor, weights_many[name]), name
