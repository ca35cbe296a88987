"""Tracking with real DVC: queued experiments keep their W&B runs under the main repository, each
run records the input hashes DVC records for that experiment, `wandb sync` finds them from the
repository root, and missing-file errors in a queued run say why."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from cropseg.core.workspace import missing_file_hint
from cropseg.tracking.lineage import dvc_md5, remote_object_url
from cropseg.tracking.offline_run import read_offline_run

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

MAKE = """\
import sys, yaml
from pathlib import Path
n = yaml.safe_load(open("params.yaml"))["n"]
out = Path("data/d")
out.mkdir(parents=True, exist_ok=True)
for i in range(n):
    (out / f"{i}.txt").write_text(f"file {i} of {n}\\n")
"""

USE = """\
import sys, yaml
from pathlib import Path
from cropseg.tracking.wandb_run import StageRun
n = yaml.safe_load(open("params.yaml"))["n"]
Path("out.txt").write_text(str(len(list(Path("data/d").iterdir()))))
run = StageRun("use", "offline", "cropseg-test", params={"n": n}, inputs={"data/d": Path("data/d")})
run.summary({"files": n})
run.outputs({"out": Path("out.txt")})
run.finish()
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "DVC_"))}
    return env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "WANDB_MODE": "offline",
                  "XDG_DATA_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home"),
                  "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                  "GIT_COMMITTER_EMAIL": "t@t"}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def tiny_repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A git + DVC repository of two stages: `make` writes data/d (n files), `use` logs a W&B run."""
    repo, env = tmp_path / "repo", _env(tmp_path)
    (tmp_path / "home").mkdir()
    repo.mkdir()
    (repo / "make.py").write_text(MAKE)
    (repo / "use.py").write_text(USE)
    (repo / "params.yaml").write_text("n: 1\n")
    (repo / "dvc.yaml").write_text(
        f"stages:\n  make:\n    cmd: {sys.executable} make.py\n    deps: [make.py]\n    params: [n]\n"
        f"    outs: [data/d]\n  use:\n    cmd: {sys.executable} use.py\n    deps: [use.py, data/d]\n"
        f"    outs: [out.txt]\n")
    (repo / ".gitignore").write_text("/wandb/\n")
    _run(["git", "init", "-q"], repo, env)
    _run(["dvc", "init", "-q"], repo, env)
    _run(["dvc", "config", "core.analytics", "false"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "init"], repo, env)
    return repo, env


def _wait_for_queue(repo: Path, env: dict[str, str], timeout: float = 150) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = _run(["dvc", "queue", "status"], repo, env)
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(1)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def test_queued_experiments_keep_their_wandb_runs_with_their_own_input_hashes(tiny_repo):
    repo, env = tiny_repo
    for n in (2, 3):
        _run(["dvc", "exp", "run", "--queue", "-S", f"n={n}", "-n", f"exp-n{n}"], repo, env)
    _run(["dvc", "queue", "start", "-j", "1"], repo, env)
    status = _wait_for_queue(repo, env)
    assert status.count("Success") == 2, status

    # one folder per run under the main repository's wandb/ (the temporary copies are gone)
    folders = sorted((repo / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(list(f.glob("run-*.wandb")) for f in folders)
    assert not list((repo / ".dvc" / "tmp" / "exps").glob("*/wandb"))
    runs = {read_offline_run(f)["group"]: read_offline_run(f) for f in folders}
    assert set(runs) == {"exp-n2", "exp-n3"}

    # each run's input hash is the one DVC recorded for that experiment's `use` stage
    shown = json.loads(_run(["dvc", "exp", "show", "--json"], repo, env))
    recorded = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                recorded[rev["name"]] = data["deps"]["data/d"]["hash"]
    assert set(recorded) == {"exp-n2", "exp-n3"} and recorded["exp-n2"] != recorded["exp-n3"]
    for name, run in runs.items():
        assert run["name"] == f"{name}-use" and run["job_type"] == "use"
        assert run["config"]["dvc_inputs"]["data/d"] == recorded[name]
        assert run["config"]["dvc"]["queued"] is True and run["config"]["dvc"]["root"] == str(repo)
        assert run["summary"]["files"] == int(name[-1])
        assert run["artifacts"]["use-out"]["metadata"]["md5"] == dvc_md5_text(name[-1])
    # W&B's staging folder stays empty: outputs are linked into the run folder instead
    assert not list((Path(env["XDG_DATA_HOME"])).rglob("staging/*"))

    # `wandb sync` from the repository root finds both runs
    sync = subprocess.run(["wandb", "sync", "--dry-run"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=120)
    listed = sync.stdout + sync.stderr
    assert "Would sync 2 run(s)" in listed, listed
    for folder in folders:  # (one of them may be listed through the latest-run link)
        assert f"run-{folder.name.rsplit('-', 1)[1]}.wandb" in listed, listed


def dvc_md5_text(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


def test_outputs_reference_the_dvc_remote_when_one_is_configured(tiny_repo):
    repo, env = tiny_repo
    remote = repo.parent / "remote"
    _run(["dvc", "remote", "add", "-d", "store", str(remote)], repo, env)
    _run(["git", "commit", "-qam", "remote"], repo, env)
    _run(["dvc", "repro"], repo, env)
    (folder,) = (repo / "wandb").glob("offline-run-*")
    run = read_offline_run(folder)
    md5 = dvc_md5(repo / "out.txt")
    url = remote_object_url(remote.as_uri(), md5)
    assert run["artifacts"]["use-out"]["entries"]["out.txt"]["ref"] == url
    assert run["artifacts"]["use-out"]["metadata"] == {"path": "out.txt", "md5": md5, "remote": remote.as_uri(),
                                                      "url": url}
    # under plain `dvc repro` the group is the git revision
    revision = _run(["git", "rev-parse", "HEAD"], repo, env).strip()
    assert run["group"] == revision[:7] and run["name"] == f"{revision[:7]}-use"
    # and the object is where `dvc push` puts it
    _run(["dvc", "push"], repo, env)
    assert Path(url.removeprefix("file://")).read_text() == "1"


def test_missing_file_hint_names_queued_experiments(tmp_path, monkeypatch):
    main, copy = tmp_path / "main", tmp_path / "main" / ".dvc" / "tmp" / "exps" / "tmpabc"
    (main / "configs").mkdir(parents=True)
    (main / "configs" / "mine.yaml").write_text("rules: []\n")
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert missing_file_hint("configs/mine.yaml") == ""
    monkeypatch.setenv("DVC_ROOT", str(main))
    hint = missing_file_hint("configs/mine.yaml")
    assert "queued experiment" in hint and "git add configs/mine.yaml" in hint
    assert str(main / "configs" / "mine.yaml") in hint and "not committed" in hint


def test_evaluate_and_irreducible_runs_sit_in_the_experiment_group(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cropseg.evaluate.stage import EvaluatePaths
    from cropseg.selection.irreducible import IrreducibleSummary
    from cropseg.core.params import load_params
    from cropseg.tracking.scoring_runs import track_evaluate, track_irreducible

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-eval")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    params = load_params(REPO / "params.yaml")
    out = tmp_path / "metrics" / "evaluate"
    out.mkdir(parents=True)
    shutil.copy(REPO / "metrics" / "evaluate" / "metrics.json", out / "metrics.json")
    shutil.copy(REPO / "metrics" / "evaluate" / "per_class.csv", out / "per_class.csv")
    for name in ("confusion", "per_class_f1", "previews"):
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, 1])
        fig.savefig(out / f"{name}.png")
        plt.close(fig)
    for path, text in (("models/model.pt", "weights"), ("data/medians/meta.json", "{}"), ("data/split/test.txt", "a\n"),
                       ("data/split/patches.csv", "path\n"), ("data/split/train.txt", "b\n"),
                       ("models/holdout.pt", "h"), ("data/irreducible_loss/losses.npy", "l")):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    track_evaluate(params, EvaluatePaths(), type("Result", (), {"seconds": 1.5})())
    track_irreducible(params, holdout_model=Path("models/holdout.pt"), medians=Path("data/medians"),
                      split_dir=Path("data/split"), out=Path("data/irreducible_loss"),
                      summary=IrreducibleSummary(16, 2, 0.5, 0.1))
    runs = {r["job_type"]: r for r in map(read_offline_run, sorted((tmp_path / "wandb").glob("offline-run-*")))}
    assert set(runs) == {"evaluate", "irreducible_loss"}
    evaluate = runs["evaluate"]
    expected = json.loads((out / "metrics.json").read_text())
    assert evaluate["group"] == "exp-eval" and evaluate["name"] == "exp-eval-evaluate"
    assert evaluate["summary"]["test/weighted_f1"] == expected["test"]["weighted_f1"]
    assert evaluate["summary"]["per_class._type"] == "table-file"
    assert evaluate["summary"]["per_class.nrows"] == len(pd.read_csv(out / "per_class.csv"))
    for image in ("confusion", "per_class_f1", "previews"):
        assert evaluate["summary"][f"{image}._type"] == "image-file"
    assert not list((tmp_path / "xdg").rglob("staging/*"))
    assert evaluate["config"]["dvc_inputs"]["models/model.pt"] == dvc_md5("models/model.pt")
    assert evaluate["config"]["params"]["train.precision"] == params.train.precision
    assert evaluate["artifacts"]["evaluate-metrics"]["metadata"]["md5"] == dvc_md5(out)
    irreducible = runs["irreducible_loss"]
    assert irreducible["summary"]["without_parcels"] == 2
    assert irreducible["config"]["dvc_inputs"]["data/split/train.txt"] == dvc_md5("data/split/train.txt")
    assert irreducible["artifacts"]["irreducible_loss-losses"]["metadata"]["md5"] == dvc_md5("data/irreducible_loss")
