"""Params of the whole pipeline at its smallest: what the end-to-end tests run DVC's stages with."""

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
#: Overrides of params.yaml: 4 patches of 122 px, a 4-channel one-level U-Net, batches of 4.
TINY = {"data": {"years": [2019], "synthetic": {"patches": 4, "patch_size": 122, "acquisitions": 12,
                                                 "parcels": 30}},
        "medians": {"workers": 1}, "split": {"workers": 1},
        "model": {"width": 4, "depth": 1, "precise_bn_samples": 8},
        "holdout": {"epochs": 2, "batch_size": 4, "physical_batch_size": 4},
        "train": {"batch_size": 4, "physical_batch_size": 4, "allow_degenerate_split": True}}


def merge(base: dict, extra: dict) -> dict:
    """``extra`` written into ``base`` key by key (nested sections merged, not replaced)."""
    for key, value in extra.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def tiny_params(**sections: dict) -> dict:
    """The project's params.yaml with :data:`TINY` and then ``sections`` merged in."""
    return merge(merge(yaml.safe_load((REPO / "params.yaml").read_text()), copy.deepcopy(TINY)), sections)


def tiny_project(dest: Path, env: dict | None = None, setup: Sequence[Sequence[str]] = ()) -> dict:
    """The project (code, ``dvc.yaml``, tiny params) as a fresh git + DVC repository in ``dest``, committed.

    ``setup`` commands run after ``dvc init`` and before the commit (e.g. a DVC remote). Returns the
    environment the commands ran with (no ``DVC_*`` of an outer DVC run, this venv first on PATH, one
    thread, offline trackers, a git identity), ``env`` merged in."""
    for name in ("src", "stages", "configs", "experiments"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    run_env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{run_env['PATH']}", "OMP_NUM_THREADS": "1",
                "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"} | (env or {})
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                    *setup, ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(list(command), cwd=dest, env=run_env, check=True, capture_output=True)
    return run_env
