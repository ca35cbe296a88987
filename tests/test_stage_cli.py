"""Every stage script reports a domain error in one line and exit status 1 (cropseg.core.stage_cli)."""

import subprocess
import sys
from pathlib import Path

import pytest

from cropseg.core.atomic import restore_hint
from cropseg.core.params import ParamsError
from cropseg.core.stage_cli import run_stage

REPO = Path(__file__).resolve().parents[1]


class _Summary:
    def line(self) -> str:
        return "demo: 3 things, 0.1 s"


def _raise(error: BaseException):
    def body():
        raise error
    return body


def test_success_prints_the_summary_line(capsys):
    assert run_stage("demo", _Summary) == 0
    assert run_stage("demo", lambda: "demo: a line") == 0
    assert capsys.readouterr().out == "demo: 3 things, 0.1 s\ndemo: a line\n"


def test_a_domain_error_is_one_line_with_the_restore_hint_once(capsys):
    assert run_stage("demo", _raise(ParamsError("data.years: expected a list")), restore="data/x") == 1
    err = capsys.readouterr().err
    assert err == f"demo: error: data.years: expected a list\n{restore_hint('data/x')}\n"
    # a message that already ends with the hint (FetchError) does not get it twice
    assert run_stage("demo", _raise(ParamsError(f"bad\n{restore_hint('data/x')}")), restore="data/x") == 1
    assert capsys.readouterr().err.count("dvc checkout data/x") == 1


def test_named_errors_are_domain_errors_and_others_keep_their_traceback(capsys):
    assert run_stage("demo", _raise(FileNotFoundError("models/model.pt")), errors=(FileNotFoundError,)) == 1
    assert capsys.readouterr().err == "demo: error: models/model.pt\n"
    with pytest.raises(KeyError):
        run_stage("demo", _raise(KeyError("a bug")))


def test_train_stage_reports_a_missing_split_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("tracking:\n  wandb: disabled\n")
    done = subprocess.run([sys.executable, str(REPO / "stages" / "train.py"), "holdout", "--params",
                           str(tmp_path / "params.yaml"), "--medians", str(tmp_path / "medians"),
                           "--split", str(tmp_path / "split"), "--model", str(tmp_path / "model.pt"),
                           "--metrics", str(tmp_path / "metrics"), "--checkpoints", str(tmp_path / "ck")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("holdout: error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_irreducible_stage_reports_a_missing_model_in_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("tracking:\n  wandb: disabled\n")
    done = subprocess.run([sys.executable, str(REPO / "stages" / "irreducible_loss.py"), "--params",
                           str(tmp_path / "params.yaml"), "--model", str(tmp_path / "holdout.pt"),
                           "--medians", str(tmp_path / "medians"), "--split", str(tmp_path / "split"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("irreducible_loss: error: ") and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
