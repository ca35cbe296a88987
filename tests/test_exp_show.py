"""The README's recipe for comparing selection methods in `dvc exp show`, run on experiments with
metrics files written by the real tracker and the metrics declared in the project's dvc.yaml."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from cropseg.tracking.tracker import Tracker

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VAL = ["accuracy", "weighted_f1", "macro_f1", "crop5_accuracy", "crop5_weighted_f1", "crop5_macro_f1", "loss", "lr",
       "selection/score_selected", "selection/noisy_share_selected"]


def _recipe() -> str:
    """The `dvc exp show` line under README's 'compare selection methods' marker."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- recipe: compare selection methods -->", 1)[1]
    return next(line.strip() for line in block.splitlines() if line.strip().startswith("dvc exp show"))


def _write_metrics(f1: float) -> None:
    for stage in ("holdout", "train"):
        tracker = Tracker(Path("metrics") / stage, stage=stage, config={}, wandb_mode="disabled", project="p",
                          resume_step=None, step_columns=["loss", "lr"], val_columns=VAL)
        counters = {"step": 4, "epoch": 1, "samples_seen": 64, "samples_considered": 128, "pixels_seen": 9}
        tracker.log("val", counters, {k: f1 for k in VAL})
        tracker.summary({f"best/{k}": f1 for k in VAL} | {"best/epoch": 1})
        tracker.flush()
        tracker.close()
    Path("metrics/evaluate").mkdir(parents=True, exist_ok=True)
    evaluate = json.loads((REPO / "metrics" / "evaluate" / "metrics.json").read_text())
    evaluate["test"]["weighted_f1"] = f1 - 0.1
    Path("metrics/evaluate/metrics.json").write_text(json.dumps(evaluate))


def test_readme_recipe_shows_the_selection_comparison_on_one_screen(tmp_path, monkeypatch):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "COLUMNS": "200", "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run = lambda *args: subprocess.run(args, cwd=tmp_path, env=env, check=True, capture_output=True, text=True).stdout
    monkeypatch.chdir(tmp_path)
    # the project's params and metrics declarations (stages left out: their code is not here)
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    metrics = [next(iter(m)) if isinstance(m, dict) else m
               for stage in pipeline["stages"].values() for m in stage.get("metrics", [])]
    assert "data/split/summary.json" not in metrics  # per-class pixel counts are no DVC metrics
    Path("dvc.yaml").write_text(yaml.safe_dump({"metrics": metrics, "params": ["params.yaml"]}))
    shutil.copy(REPO / "params.yaml", "params.yaml")
    run("git", "init", "-q")
    run("dvc", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    _write_metrics(0.5)
    run("git", "add", "-A")
    run("git", "commit", "-qm", "baseline")
    params = Path("params.yaml").read_text()
    for f1, method in ((0.61, "uniform"), (0.72, "loss"), (0.83, "rho_loss")):
        Path("params.yaml").write_text(re.sub(r"(?m)^  method: \S+", f"  method: {method}", params))
        _write_metrics(f1)
        run("dvc", "exp", "save", "-q", "-n", f"sel-{method}")
    run("git", "checkout", "-q", "--", ".")

    command = _recipe()
    assert "--no-pager" not in command
    shown = run(*_split(command), "--no-pager")
    lines = [line.rstrip() for line in shown.splitlines() if line.strip()]
    assert max(len(line) for line in lines) <= 200, shown
    header = next(line for line in lines if "Experiment" in line).split()
    assert header == ["Experiment", "val.weighted_f1", "samples_seen", "best.weighted_f1", "test.weighted_f1",
                      "selection.method"], header
    assert sum("[sel-" in line for line in lines) == 3
    for line in lines:
        if "[sel-rho_loss]" in line:
            assert line.split()[-5:] == ["0.83", "64", "0.83", "0.73", "rho_loss"], line


def _split(command: str) -> list[str]:
    import shlex

    return shlex.split(command)
