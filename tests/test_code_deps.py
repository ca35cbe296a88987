"""dvc.yaml code dependencies: derived from the import graph, checked here, and trusted by `dvc status`."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cropseg.core.code_deps import expected_deps, problems, rewrite, stage_modules

REPO = Path(__file__).resolve().parents[1]


def _scratch(tmp_path: Path) -> Path:
    """A copy of the pipeline definition and code (no data, no git)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    for folder in ("src", "stages", "configs"):
        shutil.copytree(REPO / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def test_every_stage_lists_exactly_the_modules_it_imports():
    assert problems(REPO) == []
    deps = expected_deps(REPO)
    # modules once missing from the hand-written lists
    for module in ("nn/checkpoint", "nn/models", "nn/scoring", "selection/selector", "nn/precision", "split/labels",
                   "core/params", "core/atomic"):
        assert f"src/cropseg/{module}.py" in deps["irreducible_loss"], module
    assert {"src/cropseg/tracking/tracker.py", "src/cropseg/medians/store_reader.py"} <= set(deps["train"])
    assert "src/cropseg/s4a/geo.py" in deps["fetch_s4a"] and "src/cropseg/s4a/geo.py" in deps["fetch_dem"]
    # light stages stay light: no training code behind params validation
    assert not {"src/cropseg/selection/selector.py", "src/cropseg/train/loop.py"} & set(deps["fetch_s4a"])


def test_a_new_import_not_in_dvc_yaml_fails_the_check_and_write_fixes_it(tmp_path):
    repo = _scratch(tmp_path)
    loss = repo / "src" / "cropseg" / "nn" / "loss.py"
    loss.write_text(loss.read_text().replace("from __future__ import annotations\n",
                                             "from __future__ import annotations\n\nfrom ..predict.geotiff import NODATA\n", 1))
    found = problems(repo)
    assert any(line.startswith("dvc.yaml: stage irreducible_loss:") and "missing" in line
               and "src/cropseg/predict/geotiff.py" in line
               for line in found), found
    assert "predict/geotiff.py" in stage_modules(repo / "stages" / "train.py", repo / "src" / "cropseg")
    assert rewrite(repo) and problems(repo) == [] and not rewrite(repo)
    done = subprocess.run([sys.executable, "-m", "cropseg.core.code_deps", "--repo", str(repo), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def _dvc(repo: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@pytest.mark.filterwarnings("ignore")
def test_dvc_status_sees_an_edit_of_a_module_irreducible_loss_runs(tmp_path):
    repo = _scratch(tmp_path)
    _dvc(repo, "init", "--no-scm", "-q")
    _dvc(repo, "config", "core.analytics", "false")
    for path in ("models/holdout.pt", "data/split/train.txt", "data/medians/meta.json",
                 "data/irreducible_loss/losses.npy", "data/netcdf/index.csv"):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(f"stand-in for {path}\n")
    _dvc(repo, "commit", "-f", "-q", "irreducible_loss")  # records the stage's deps as they are now
    assert "up to date" in _dvc(repo, "status", "irreducible_loss")

    unrelated = repo / "src" / "cropseg" / "predict" / "stage.py"  # irreducible_loss does not run it
    unrelated.write_text(unrelated.read_text() + "\n# an edit\n")
    assert "up to date" in _dvc(repo, "status", "irreducible_loss")

    used = repo / "src" / "cropseg" / "nn" / "precise_bn.py"  # irreducible -> selection -> precise_bn: not listed by hand
    used.write_text(used.read_text() + "\n# an edit\n")
    status = _dvc(repo, "status", "irreducible_loss")
    assert "irreducible_loss:" in status and "changed deps" in status and "src/cropseg/nn/precise_bn.py" in status
