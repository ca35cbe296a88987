"""Rerun leaks: every module a stage lists in dvc.yaml is one its default path really imports.

`cropseg.core.code_deps` derives each stage's code deps from the import graph (lazy imports
included), so a module imported only on a side path (another command, an error branch) still
becomes a dependency, and an edit to it reruns the stage for nothing. This test runs the whole
pipeline once on tiny synthetic data, each stage's `cmd` from dvc.yaml exactly as DVC runs it
(with `PYTHONPROFILEIMPORTTIME=1`, which makes Python print every module it imports), and fails
when a stage lists a module that its run never imported.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from tiny_pipeline import tiny_params

from cropseg.core.code_deps import expected_deps

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Modules a stage runs only under another value of one of its params: DVC cannot make a dep depend on
# a param, and leaving them out would let an edit to them go unnoticed when that value is chosen.
OTHER_PARAM_VALUES = {
    "fetch_s4a": ["src/cropseg/core/download.py",  # data.source: huggingface
                  "src/cropseg/fetch/huggingface.py"],
}
IMPORT_LINE = re.compile(r"^import time:\s+\d+\s+\|\s+\d+\s+\|\s*(cropseg(?:\.[\w.]+)?)\s*$")


def _module_path(name: str) -> str:
    """``cropseg.nn.loss`` -> ``src/cropseg/nn/loss.py``; a package -> its ``__init__.py``."""
    path = REPO / "src" / Path(*name.split("."))
    return f"src/{name.replace('.', '/')}/__init__.py" if path.is_dir() else f"src/{name.replace('.', '/')}.py"


def test_each_stage_imports_every_module_it_lists(tmp_path):
    for name in ("src", "stages", "configs"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = tiny_params(holdout={"epochs": 1}, train={"epochs": 1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "WANDB_"))}
    # W&B as by default (offline, files under tmp): its lazily imported tracking code is on the default path
    env |= {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1",
            "PYTHONPROFILEIMPORTTIME": "1"}
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    listed = expected_deps(REPO)
    unneeded = {}
    for stage, spec in stages.items():  # dvc.yaml lists the stages in the order they run
        done = subprocess.run(spec["cmd"], shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        imports = [IMPORT_LINE.match(line) for line in done.stderr.splitlines()]
        assert done.returncode == 0, f"{stage}: {spec['cmd']}\n" + "\n".join(
            line for line in done.stderr.splitlines() if not line.startswith("import time:"))[-3000:]
        imported = {_module_path(m.group(1)) for m in imports if m}
        assert imported, f"{stage}: no import lines: is PYTHONPROFILEIMPORTTIME honoured?"
        assert imported <= set(listed[stage]), f"{stage} imported modules its deps do not list"
        if set(listed[stage]) - imported:
            unneeded[stage] = sorted(set(listed[stage]) - imported)
    assert unneeded == OTHER_PARAM_VALUES, ("modules a stage lists in dvc.yaml but never imports on its default path "
                            f"(an edit to them reruns the stage for nothing): {unneeded}")
