"""What a Dask worker does for one point of a grid: clone, pull, ``dvc exp run``, push, clean up.

The DVC-native way to run an experiment elsewhere: a fresh clone of the git remote at the grid's
revision in the worker's scratch space; ``dvc exp run --pull`` (the run cache and the outputs of
the stages the point shares with the others come from the DVC remote instead of being computed);
``dvc exp push`` (the experiment's git ref to the git remote, its outputs to the DVC remote); the
clone deleted. The submitting machine then only runs ``dvc exp pull``.

Standard library only, and sent to the workers by value (:mod:`cropseg.sweep.executor`): a
worker needs Python, git and DVC, not this package (the stages run the clone's own ``src/``).
Each step's wall time is recorded; ``pull_s`` is the time from the start of ``dvc exp run`` to its
first stage that really runs (pulling the run cache and restoring the shared stages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

#: How much of a failed step's output a result carries back.
LOG_CHARS = 20_000


def _scratch(scratch: str | None) -> Path:
    """The worker's scratch space: ``scratch``, else the Dask worker's local directory, else the temp dir."""
    if scratch:
        return Path(scratch)
    try:
        from distributed import get_worker

        return Path(get_worker().local_directory)
    except (ImportError, ValueError):
        return Path(tempfile.gettempdir())


def _environment() -> dict[str, str]:
    """The worker's environment for git and DVC: no DVC_* of an enclosing DVC run, this Python first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"  # stage lines reach the log as they are written (timing of the pull)
    env["GIT_TERMINAL_PROMPT"] = "0"  # a git remote that asks for a password fails instead of hanging
    # every clone on this node shares one set of GPU locks (cropseg.core.gpus), not one per clone or worker
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    env.setdefault("CROPSEG_GPU_LOCK_DIR", str(Path(tempfile.gettempdir()) / f"cropseg-gpu-locks-{user}"))
    return env


class StepFailed(RuntimeError):
    """A command of the task exited non-zero."""


def _run(command: list[str], cwd: Path, env: dict[str, str], log: list[str],
         first_line: str | None = None, ran: list[str] | None = None) -> float | None:
    """Run ``command``, appending its output to ``log``; the seconds until ``first_line`` starts a line of it.

    ``ran`` collects the stages DVC really ran (not restored from the run cache).
    """
    log.append(f"$ {' '.join(command)}\n")
    mark = len(log)
    ran = [] if ran is None else ran
    started = time.monotonic()
    seen: float | None = None
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as process:
        for line in process.stdout:
            if seen is None and first_line and line.startswith(first_line):
                seen = time.monotonic() - started
            log.append(line)
    ran.extend(line.split("'")[1] for line in log[mark:] if line.startswith("Running stage '"))
    if process.returncode:
        raise StepFailed(f"`{' '.join(command[:4])} ...` exited with {process.returncode}")
    return seen


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def run_experiment(job: dict) -> dict:
    """Run one job on this worker and say how it went (never raises for a failed step).

    Args:
        job: ``url`` (git remote), ``rev`` (commit), ``name`` (experiment name, or "" for the shared
            stages), ``args`` (``-S KEY=VALUE ...``), ``targets``, ``push``: ``experiment`` (``dvc exp
            push``) or ``run-cache`` (``dvc push --run-cache TARGETS``: the shared stages), ``scratch``
            (a folder; default the worker's), ``keep`` (leave the clone for inspection).

    Returns:
        ``name``, ``ok``, ``error``, ``log`` (all output when it failed, else its last lines),
        ``host``, ``ran`` (the stages run, not restored), ``clone_s``, ``pull_s`` (None when no stage
        ran), ``run_s``, ``push_s``, ``total_s``.
    """
    started = time.monotonic()
    scratch = _scratch(job.get("scratch"))
    scratch.mkdir(parents=True, exist_ok=True)
    work = scratch / f"cropseg-{job['name'] or 'shared'}-{uuid.uuid4().hex[:8]}"
    env = _environment()
    log: list[str] = []
    result = {"name": job["name"], "ok": False, "error": "", "host": os.uname().nodename if hasattr(os, "uname")
              else "", "ran": [], "clone_s": None, "pull_s": None, "run_s": None, "push_s": None, "total_s": None}
    try:
        step = time.monotonic()
        _run(["git", "clone", "--quiet", "--no-checkout", job["url"], str(work)], scratch, env, log)
        _run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", job["rev"]], work, env, log)
        for key, value in (("user.name", "cropseg sweep"), ("user.email", "cropseg-sweep@localhost")):
            if subprocess.run(["git", "config", key], cwd=work, env=env, capture_output=True).returncode:
                subprocess.run(["git", "config", key, value], cwd=work, env=env, check=True)
        result["clone_s"] = time.monotonic() - step

        step = time.monotonic()
        name = ["-n", job["name"]] if job["name"] else []
        result["pull_s"] = _run(_dvc("exp", "run", "--pull", *name, *job["args"], *job["targets"]), work, env, log,
                                first_line="Running stage", ran=result["ran"])
        result["run_s"] = time.monotonic() - step

        step = time.monotonic()
        if job["push"] == "experiment":
            _run(_dvc("exp", "push", "origin", job["name"]), work, env, log)
        elif job["push"] == "run-cache":
            _run(_dvc("push", "--run-cache", *job["targets"]), work, env, log)
            # the objects of `cache: false` outputs, which `dvc push --run-cache` leaves out (the clone's own code)
            _run([sys.executable, "-m", "cropseg.sweep.run_cache", *job["targets"]], work,
                 env | {"PYTHONPATH": "src"}, log)
        result["push_s"] = time.monotonic() - step
        result["ok"] = True
    except (StepFailed, OSError, subprocess.CalledProcessError) as error:
        result["error"] = str(error)
    finally:
        if not job.get("keep"):
            shutil.rmtree(work, ignore_errors=True)
    text = "".join(log)
    result["log"] = text[-LOG_CHARS:] if not result["ok"] else text[-2_000:]
    result["total_s"] = time.monotonic() - started
    return result
