"""A tiny grid on a Dask LocalCluster, as on a cluster: a bare git remote and a local-folder DVC remote.

`experiments/grid.py tiny --executor dask` with 4 points (uniform and rho_loss, replicates 0 and 1)
on 2 workers: the stages the points of a replicate share (data, split, IL model) run once per
replicate and are pushed with their run cache, each point is cloned from the bare repository into a
worker's scratch space, restores its replicate's shared stages from the DVC remote, trains and
evaluates, and pushes its experiment; the user's repository then holds the
pulled experiment refs and nothing else, and experiments/report.py builds the report from them.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_pipeline import tiny_project

REPO = Path(__file__).resolve().parents[1]
GRID = ["experiments/grid.py", "tiny", "--replicates", "2", "--methods", "uniform", "rho_loss_b2"]


@pytest.fixture
def cloned_repo(tmp_path: Path) -> tuple[Path, dict, Path]:
    """The user's repository (a clone of a bare 'origin'), its DVC remote a local folder; and the scratch space."""
    work = tmp_path / "work"
    work.mkdir()
    env = tiny_project(work, {"PYTHONPATH": str(REPO / "src"), "TMPDIR": str(tmp_path)},
                       setup=[["dvc", "remote", "add", "-d", "store", str(tmp_path / "dvc-store")]])
    for command in (["git", "init", "-q", "--bare", str(tmp_path / "origin.git")],
                    ["git", "remote", "add", "origin", str(tmp_path / "origin.git")],
                    ["git", "push", "-q", "origin", "HEAD"]):
        subprocess.run(command, cwd=work, env=env, check=True, capture_output=True)
    return work, env, tmp_path


def _run(repo: Path, env: dict, *args: str) -> str:
    done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_tiny_grid_runs_on_a_local_dask_cluster_and_reports(cloned_repo):
    repo, env, tmp = cloned_repo
    before = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if ".git" not in p.parts
                    and ".dvc" not in p.parts)
    printed = _run(repo, env, sys.executable, *GRID, "--executor", "dask", "--workers", "2",
                   "--scratch", str(tmp / "scratch"))
    assert "grid: shared stages first, once per group of points that agree on data.synthetic.seed, holdout.seed, " \
           "protocol.noise_seed, split.seed: fetch_s4a, fetch_dem, medians, split, train_holdout, irreducible_loss " \
           "(2 group(s) of 2, 2 points)" in printed, printed
    assert "(ran fetch_s4a, fetch_dem, medians, split, train_holdout, irreducible_loss)" in printed, printed
    assert "grid: 4 run, 0 existed, 0 failed; 4 experiments pulled" in printed, printed
    # each point restored the shared stages from the run cache and ran only its own (train, evaluate)
    done = [line for line in printed.splitlines() if " done in " in line]
    assert len(done) == 4 and all("; ran train, evaluate) on " in line for line in done), printed

    # nothing in the workspace but the experiment refs; the workers' clones are gone
    after = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if ".git" not in p.parts
                   and ".dvc" not in p.parts)
    assert after == before
    assert _run(repo, env, "git", "status", "--porcelain") == ""
    assert not list((tmp / "scratch").glob("cropseg-*"))
    names = _run(repo, env, "dvc", "exp", "list", "--name-only").split()
    assert len(names) == 4 and all(name.startswith("tiny-") for name in names)
    remote_refs = _run(repo, env, "git", "ls-remote", "origin", "refs/exps/*")
    assert all(name in remote_refs for name in names)
    assert any((tmp / "dvc-store").rglob("*"))  # outputs and run cache went to the DVC remote
    assert (tmp / "dvc-store" / "runs").is_dir()

    printed = _run(repo, env, sys.executable, "experiments/report.py")
    assert "4 runs in 1 regime(s), 0 left out" in printed, printed
    summary = json.loads((repo / "metrics/comparison/summary.json").read_text())
    methods = {m["method"]: m for m in summary["regimes"][0]["methods"]}
    assert set(methods) == {"uniform", "rho_loss_b2"} and summary["regimes"][0]["regime"] == "tiny"
    assert 0 <= methods["rho_loss_b2"]["means"]["auc"] <= 1 and methods["rho_loss_b2"]["replicates"] == [0, 1]

    # running the same grid again submits nothing: all four experiments exist (a failed one would be resubmitted)
    printed = _run(repo, env, sys.executable, *GRID, "--executor", "dask", "--workers", "1")
    assert "grid: 0 run, 4 existed, 0 failed; 4 experiments pulled" in printed, printed
