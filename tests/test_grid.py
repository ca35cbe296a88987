"""The comparison grid end to end, tiny: experiments/grid.py queues through DVC, `dvc queue start`
runs the real pipeline in each experiment, experiments/report.py builds the report from
`dvc exp show --json`. 2 seeds x {uniform, loss, rho_loss}: the machinery, not a claim."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import tiny_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
@pytest.fixture
def tiny_repo(tmp_path: Path) -> tuple[Path, dict]:
    for name in ("src", "stages", "configs", "experiments"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, tmp_path / name)
    params = tiny_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
            "HF_HUB_OFFLINE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True)
    return tmp_path, env


def test_tiny_grid_queues_runs_and_reports(tiny_repo):
    repo, env = tiny_repo
    run = lambda *args, timeout=600: subprocess.run(args, cwd=repo, env=env, check=True, capture_output=True,  # noqa: E731
                                                    text=True, timeout=timeout).stdout
    queued = run(sys.executable, "experiments/grid.py", "tiny", "--seeds", "2", "--methods", "loss", "rho_loss",
                 "--blocks", "2")
    assert queued.count("dvc exp run --queue evaluate") == 2
    run("dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        status = run("dvc", "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Failed" not in status, status + run("dvc", "queue", "logs", status.split()[4], timeout=60)
    assert status.count("Success") == 6, status

    printed = run(sys.executable, "experiments/report.py", "--replicates", "200")
    assert "6 experiments in 1 regime(s), 0 left out" in printed, printed
    summary = json.loads((repo / "metrics/comparison/summary.json").read_text())
    regime = summary["regimes"][0]
    assert regime["label"] == "per-sample noise 40%, budget 96 samples seen"
    rows = {(r["method"], r["block_size"]): r for r in regime["rows"]}
    assert set(rows) == {("uniform", 1), ("loss", 2), ("rho_loss", 2)}
    for row in rows.values():
        assert row["seeds"] == [0, 1]
        assert 0 <= row["auc"]["low"] <= row["auc"]["mean"] <= row["auc"]["high"] <= 1
        assert 0 <= row["noisy_share"]["mean"] <= 1
    assert "auc_vs_loss" in rows[("rho_loss", 2)] and "speedup" in rows[("loss", 2)]
    assert regime["holdout"]["holdout_samples"] > 0 and regime["holdout"]["scored_against"] == "clean"
    report = (repo / "metrics/comparison/report.md").read_text()
    assert "| rho_loss (block 2) |" in report and "Irreducible-loss model: clean-test weighted F1" in report
    pngs = sorted(p.name for p in (repo / "metrics/comparison").glob("*.png"))
    assert pngs == ["per_sample_noise_40_budget_96_samples_seen_curves.png",
                    "per_sample_noise_40_budget_96_samples_seen_intervals.png"]
