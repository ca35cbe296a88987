"""The Dask executor's parts without a cluster: grid points, shared stages, the SLURM job script, the source checks."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cropseg.sweep.cluster import read_slurm_config, slurm_cluster
from cropseg.sweep.executor import SweepError, check_source
from cropseg.sweep.points import Point, expand_command, expand_value, experiment_name, from_overrides, named
from cropseg.sweep.shared import common_overrides, read_pipeline, shared_stages, shared_steps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
import grid  # noqa: E402  (experiments/grid.py: the commands it queues)


def test_grid_points_become_sweep_points_in_order():
    overrides = grid.points("tiny", replicates=2)
    points = from_overrides(overrides, ["evaluate"])
    # 3 methods x 2 replicates, replicate by replicate
    assert len(points) == 3 * 2 and all(p.targets == ("evaluate",) for p in points)
    assert [(p.overrides["selection.method"], p.overrides["train.seed"]) for p in points[:4]] == [
        ("uniform", "0"), ("uniform", "0"), ("rho_loss", "0"), ("uniform", "1")]
    assert points[1].overrides["protocol.train_on_holdout"] == "true"
    assert points[2].overrides["protocol.label_noise"] == "0.4"
    assert points[2].args()[:2] == ["-S", "protocol.label_noise=0.4"]
    # the queue command of a point carries the same overrides
    command = grid.queue_command(overrides[2])
    assert expand_command(command)[0].overrides == points[2].overrides


def test_sweep_values_and_names():
    assert expand_value("range(0,3)") == ["0", "1", "2"]
    assert expand_value("range(1, 7, 3)") == ["1", "4"]
    assert expand_value("choice(a,b)") == ["a", "b"]
    assert expand_value("[1,2],3") == ["[1,2]", "3"]
    assert expand_value("'0.5*loss + 1.0*rho_loss',loss") == ["'0.5*loss + 1.0*rho_loss'", "loss"]
    with pytest.raises(ValueError, match="empty item"):
        expand_value("a,,b")
    with pytest.raises(ValueError, match="option --temp of `dvc exp run` is not supported"):
        expand_command(["dvc", "exp", "run", "--temp", "-S", "a=1"])
    point = Point({"train.seed": "1", "selection.method": "loss"})
    same = Point({"selection.method": "loss", "train.seed": "1"})
    assert experiment_name(point, "noise40") == experiment_name(same, "noise40")  # content, not order
    assert experiment_name(point) != experiment_name(Point({"train.seed": "2", "selection.method": "loss"}))
    assert experiment_name(point).startswith("grid-") and len(experiment_name(point)) == len("grid-") + 10
    with pytest.raises(ValueError, match="two points of the grid are the same experiment"):
        named([point, same])
    assert from_overrides([{"train.seed": 3}])[0].overrides == {"train.seed": "3"}


def test_shared_stages_of_a_grid_on_the_project_pipeline():
    stages = read_pipeline(REPO / "dvc.yaml")
    seeds_and_methods = from_overrides([{"protocol.label_noise": "0.4", "selection.method": m, "train.seed": s}
                                        for m in ("uniform", "rho_loss") for s in ("0", "1")])
    # the IL model (holdout section, protocol noise) is shared; train.seed reaches irreducible_loss? no: it
    # reads train.precision/physical_batch_size/device only
    assert shared_stages(stages, seeds_and_methods) == ["fetch_s4a", "fetch_dem", "medians", "split",
                                                        "train_holdout", "irreducible_loss"]
    assert common_overrides(seeds_and_methods) == {"protocol.label_noise": "0.4"}
    noises = from_overrides([{"protocol.label_noise": n} for n in ("0.2", "0.4")])
    assert shared_stages(stages, noises) == ["fetch_s4a", "fetch_dem", "medians", "split"]  # the IL model is not
    data = from_overrides([{"data.synthetic.redundancy": r} for r in ("0.0", "0.3")])
    assert shared_stages(stages, data) == []  # everything starts from fetch_s4a
    with_predict = from_overrides([{"selection.method": "loss"}, {"selection.method": "rho_loss"}],
                                  targets=["predict"])
    assert "predict" not in shared_stages(stages, with_predict)
    with pytest.raises(ValueError, match="no stage 'nope' in dvc.yaml"):
        shared_stages(stages, from_overrides([{}], targets=["nope"]))


def test_shared_steps_group_the_points_of_a_replicate():
    """A grid of replicates shares no data stage across every point, but each replicate's points share theirs."""
    stages = read_pipeline(REPO / "dvc.yaml")
    config = grid.load_regimes()
    # 2 regimes x 2 replicates x 2 methods: the data stages once per replicate (2 groups of 4), the IL
    # model once per replicate and regime (4 groups of 2), train and evaluate by every point itself
    points = from_overrides([p for regime in ("realistic", "no_noise")
                             for p in grid.points(regime, config, replicates=2, methods=["uniform", "rho_loss_b4"])])
    steps = shared_steps(stages, points)
    assert [step.stages for step in steps] == [("fetch_s4a", "fetch_dem", "medians", "split"),
                                               ("train_holdout", "irreducible_loss")]
    seed = {i: points[i].overrides["data.synthetic.seed"] for i in range(len(points))}
    assert [[seed[i] for i in group] for group in steps[0].groups] == [["0"] * 4, ["1"] * 4]
    assert steps[0].keys == ("data.synthetic.seed", "split.seed")
    assert len(steps[1].groups) == 4 and all(len(group) == 2 for group in steps[1].groups)
    for group in steps[1].groups:  # a group: one regime's replicate, both methods
        assert {points[i].overrides["selection.method"] for i in group} == {"uniform", "rho_loss"}
        assert len({(points[i].overrides["protocol.label_noise"], seed[i]) for i in group}) == 1
    assert "protocol.label_noise" in steps[1].keys and "selection.method" not in steps[1].keys
    assert shared_stages(stages, points) == []  # nothing is shared by every point
    # one replicate of one regime: everything up to the IL model is one group of every point
    one = from_overrides(grid.points("realistic", config, replicates=1, methods=["uniform", "rho_loss_b4"]))
    assert [(s.stages[-1], s.groups, s.keys) for s in shared_steps(stages, one)] == [("irreducible_loss", ((0, 1),), ())]
    # points that all differ in the data seed share nothing: no step
    assert shared_steps(stages, from_overrides([{"data.synthetic.seed": s} for s in ("0", "1")])) == []


def test_the_slurm_job_script_asks_for_the_configured_resources(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the default log folder is created under it
    config = yaml.safe_load((REPO / "configs/cluster/slurm.yaml").read_text())
    config |= {"memory": "48GB", "walltime": "02:30:00", "gpus": 2, "job_cpu": 6, "queue": "gpu-a100"}
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(config))
    cluster = slurm_cluster(path, start=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in ("#SBATCH -p gpu-a100", "#SBATCH -n 1", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=45G",
                      "#SBATCH -t 02:30:00", "#SBATCH --gres=gpu:2"):
        assert directive in lines, (directive, script)
    assert "source ~/cropseg/.venv/bin/activate" in lines
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1" in worker and "--nworkers" not in worker and "--local-directory $TMPDIR" in worker
    assert not any(line.startswith("#SBATCH -A") for line in lines)  # account: null is left out
    assert f"#SBATCH -o {Path.home()}/.cache/cropseg/slurm-logs/dask-worker-%J.out" in lines  # not the workspace
    assert worker.startswith("python -m distributed.cli.dask_worker")  # the venv's, after the prologue


def test_slurm_config_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text("jobs: 2\nmemory: 8GB\nwalltime: '01:00:00'\ngpu: 1\n")
    with pytest.raises(ValueError, match=r"slurm.yaml: unknown key 'gpu': expected SLURMCluster arguments"):
        read_slurm_config(path)
    path.write_text("jobs: 0\nmemory: 8GB\n")
    with pytest.raises(ValueError, match=r"slurm.yaml: jobs: expected an integer >= 1, found 0"):
        read_slurm_config(path)
    path.write_text("jobs: 1\n")
    with pytest.raises(ValueError, match=r"slurm.yaml: memory: required"):
        read_slurm_config(path)


def _git(cwd: Path, *args: str) -> None:
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_source_checks_say_what_a_worker_could_not_clone(tmp_path):
    repo, origin = tmp_path / "repo", tmp_path / "origin.git"
    repo.mkdir()
    _git(tmp_path, "init", "-q", "--bare", str(origin))
    _git(repo, "init", "-q")
    (repo / "params.yaml").write_text("a: 1\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "init")
    with pytest.raises(SweepError, match="no git remote 'origin'"):
        check_source(repo)
    _git(repo, "remote", "add", "origin", str(origin))
    with pytest.raises(SweepError, match=r"is not on git remote 'origin' .*`git push origin HEAD` first"):
        check_source(repo)
    _git(repo, "push", "-q", "origin", "HEAD")
    # pushed only as an experiment ref: `git clone` does not fetch refs/exps, so no worker could check it out
    (repo / "b.txt").write_text("b\n")
    _git(repo, "add", "b.txt")
    _git(repo, "commit", "-qm", "b")
    _git(repo, "push", "-q", "origin", "HEAD:refs/exps/ab/cdef/grid-1")
    with pytest.raises(SweepError, match=r"is not on git remote 'origin'"):
        check_source(repo)
    _git(repo, "reset", "-q", "--hard", "HEAD~1")
    (repo / "params.yaml").write_text("a: 2\n")
    with pytest.raises(SweepError, match=r"uncommitted changes to tracked files \(params.yaml\)"):
        check_source(repo)
    _git(repo, "checkout", "-q", "--", "params.yaml")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    _git(repo, "commit", "-qam", "dvc")
    _git(repo, "push", "-q", "origin", "HEAD")
    with pytest.raises(SweepError, match="no default DVC remote in the committed .dvc/config"):
        check_source(repo)
    _git(repo, "checkout", "-q", "HEAD~1")  # an ancestor of the pushed branch: clonable, on to the next check
    with pytest.raises(SweepError, match="no default DVC remote in the committed .dvc/config"):
        check_source(repo)


def test_a_shared_step_whose_worker_died_is_a_sweep_error_not_a_traceback():
    from cropseg.sweep.executor import Source, _run_shared_step
    from cropseg.sweep.shared import SharedStep

    class Dead:
        def result(self):
            raise RuntimeError("KilledWorker: worker tcp://10.0.0.7 died")

    class Client:
        def submit(self, *args, **kwargs):
            return Dead()

    points = from_overrides([{"data.synthetic.seed": "0", "selection.method": m} for m in ("uniform", "loss")])
    step = SharedStep(("fetch_s4a", "medians"), ((0, 1),), ("data.synthetic.seed",))
    logged = []
    with pytest.raises(SweepError, match=r"shared stages \(fetch_s4a, medians\) .* failed on \?: RuntimeError: "
                                         r"KilledWorker"):
        _run_shared_step(step, points, Client(), Source(Path("."), "origin", "url", "0" * 40), None, False, 0,
                         logged.append)
    assert logged == ["grid: shared stages first, once: fetch_s4a, medians"]


def test_dask_experiment_names_do_not_depend_on_the_other_regimes_asked_for():
    def names(*regimes: str) -> set[str]:
        done = subprocess.run([sys.executable, "experiments/grid.py", *regimes, "--replicates", "1", "--executor",
                               "dask", "--dry-run"], cwd=REPO, capture_output=True, text=True, check=True)
        return {line.split(":")[0] for line in done.stdout.splitlines() if line.startswith(regimes[0] + "-")}

    alone = names("realistic")
    assert len(alone) == 7 and alone == names("realistic", "no_noise")  # `all` after `realistic` finds them
