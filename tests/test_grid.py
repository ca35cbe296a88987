"""The comparison grid end to end, tiny: experiments/grid.py queues through DVC, `dvc queue start`
runs the real pipeline in each experiment, experiments/report.py builds runs.csv and the report from
`dvc exp show --json`, and rebuilds it from runs.csv alone. 2 replicates x {uniform, uniform on
train + holdout, rho_loss}, parcel noise: the machinery, not a claim."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny_pipeline import tiny_project

@pytest.fixture
def tiny_repo(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, tiny_project(tmp_path)


def test_tiny_grid_queues_runs_and_reports(tiny_repo):
    repo, env = tiny_repo
    run = lambda *args, timeout=600: subprocess.run(args, cwd=repo, env=env, check=True, capture_output=True,  # noqa: E731
                                                    text=True, timeout=timeout).stdout
    queued = run(sys.executable, "experiments/grid.py", "tiny")  # 2 replicates x {uniform, train + holdout, rho_loss}
    assert queued.count("dvc exp run --queue evaluate") == 6
    assert queued.count("protocol.train_on_holdout=true") == 2 and queued.count("data.synthetic.seed=1") == 3
    run("dvc", "queue", "start", "-j", "1")
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        status = run("dvc", "queue", "status")
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(5)
    assert "Failed" not in status, status + run("dvc", "queue", "logs", status.split()[4], timeout=60)
    assert status.count("Success") == 6, status

    printed = run(sys.executable, "experiments/report.py")
    assert "6 runs in 1 regime(s), 0 left out" in printed, printed
    out = repo / "metrics/comparison"
    summary = json.loads((out / "summary.json").read_text())
    (regime,) = summary["regimes"]
    assert regime["regime"] == "tiny" and regime["best_baseline"] == "uniform_train_and_holdout"
    methods = {m["method"]: m for m in regime["methods"]}
    assert set(methods) == {"uniform", "uniform_train_and_holdout", "rho_loss_b2"}
    rho = methods["rho_loss_b2"]
    assert rho["replicates"] == [0, 1] and 0 <= rho["means"]["auc"] <= 1
    assert rho["vs_uniform"]["auc"]["n"] == 2 and "auc" in rho["vs_best_baseline"]
    assert 0 <= rho["means"]["noisy_share_selected"] <= 1 and set(rho["speedups"]) >= {"seen", "wall_il"}
    # the replicates really differ: other data, other noise, other holdout model
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and runs.groupby("replicate").il_model_weighted_f1.nunique().tolist() == [1, 1]
    assert runs.il_model_weighted_f1.nunique() == 2
    assert (runs.il_forward_passes > 0).tolist() == (runs.method == "rho_loss_b2").tolist()
    report = (out / "report.md").read_text()
    assert "| rho_loss (block 2) | 2 |" in report and "IL model itself" in report
    assert sorted(p.name for p in out.glob("*.png")) == ["tiny_curves.png"]
    # the committed runs table alone rebuilds the same numbers
    again = run(sys.executable, "experiments/report.py", "--runs", "metrics/comparison/runs.csv", "--out", "again")
    assert "6 runs in 1 regime(s)" in again
    assert (repo / "again/summary.json").read_text() == (out / "summary.json").read_text()
