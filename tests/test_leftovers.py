"""Leftovers of killed runs are cleaned by the next run: temporary siblings of outputs, and the
DVCLive plots of metrics the previous run logged but this one does not."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from cropseg.core.atomic import atomic_dir, atomic_file
from cropseg.tracking.tracker import Tracker

COLUMNS = dict(step_columns=["loss"], val_columns=["weighted_f1", "selection/score_selected"])


def test_a_killed_writer_leaves_a_sibling_that_the_next_write_removes(tmp_path):
    target = tmp_path / "data" / "medians"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parents[1] / 'src')!r})
        from cropseg.core.atomic import atomic_dir
        with atomic_dir({str(target)!r}) as tmp:
            (tmp / "half.npy").write_bytes(b"x")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script])
    assert done.returncode == -signal.SIGKILL
    (stale,) = target.parent.glob(".medians.tmp-*")
    assert (stale / "half.npy").exists() and not target.exists()
    with atomic_dir(target) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert sorted(p.name for p in target.parent.iterdir()) == ["medians"]
    assert [p.name for p in target.iterdir()] == ["meta.json"]

    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    (model.parent / ".model.pt.tmp-abc123").write_bytes(b"half")
    with atomic_file(model, "wb") as handle:
        handle.write(b"whole")
    assert sorted(os.listdir(model.parent)) == ["model.pt"]


def _run(metrics: Path, rows: list[dict]) -> None:
    tracker = Tracker(metrics, stage="train", config={}, wandb_mode="disabled", project="p", resume_step=None,
                      **COLUMNS)
    for step, row in enumerate(rows, 1):
        counters = {"step": step, "epoch": step, "samples_seen": step, "samples_considered": step, "pixels_seen": step}
        tracker.log("val", counters, row)
    tracker.flush()
    tracker.close()


def test_a_fresh_run_starts_from_empty_plots_and_logs_only_compared_metrics(tmp_path):
    metrics = tmp_path / "metrics"
    _run(metrics, [{"weighted_f1": 0.5, "selection/score_selected": 1.0, "lr": 0.1}])
    tsvs = {p.relative_to(metrics / "plots" / "metrics").as_posix() for p in (metrics / "plots").rglob("*.tsv")}
    assert "val/weighted_f1.tsv" in tsvs
    # telemetry stays in val.csv (and W&B), out of metrics.json: `dvc exp show` compares what matters
    assert not any("selection" in t or t.endswith("lr.tsv") for t in tsvs)
    assert "score_selected" in (metrics / "val.csv").read_text().splitlines()[0]
    # a stale TSV of a previous run (another method) is gone after a fresh run
    stale = metrics / "plots" / "metrics" / "val" / "old_metric.tsv"
    stale.write_text("step\told_metric\n1\t0.3\n")
    _run(metrics, [{"weighted_f1": 0.6, "selection/score_selected": 2.0}])
    assert not stale.exists()
    assert (metrics / "plots" / "metrics" / "val" / "weighted_f1.tsv").read_text().splitlines()[1:] == ["1\t0.6"]
