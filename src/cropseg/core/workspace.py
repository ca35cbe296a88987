"""Where a stage runs: the main repository, or a queued experiment's temporary copy of it.

A stage runs by hand (``python stages/x.py``), under ``dvc repro`` / ``dvc exp run`` in the
repository, or in a temporary copy (``dvc exp run --queue`` / ``--temp``, under
``.dvc/tmp/exps/``) that holds only what git tracks or has staged and that DVC deletes afterwards.
DVC sets ``DVC_ROOT`` to the *main* repository in all DVC runs, temporary copies included
(treeverse/dvc #9918; checked with a queued experiment in ``tests/test_tracking.py``).

The stages need this in two places: error messages about a missing file (an uncommitted preset is
the usual cause in a queued run, :func:`missing_file_hint`) and experiment tracking, whose records
must outlive the copy (:mod:`cropseg.tracking.lineage`). It lives in ``core`` so that a stage
that only reports missing files does not depend on the tracking code.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git(args: list[str], cwd: str | Path = ".") -> str | None:
    """Stdout of ``git ARGS`` (stripped), or None when git is missing or the command fails."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def repo_root() -> Path:
    """The main repository: ``DVC_ROOT`` (also from a queued run's temporary copy), else git's top level."""
    root = os.environ.get("DVC_ROOT")
    if root:
        return Path(root).absolute()
    top = git(["rev-parse", "--show-toplevel"])
    return Path(top).absolute() if top else Path.cwd().absolute()


def in_temporary_copy() -> bool:
    """True inside a queued (or ``--temp``) experiment: DVC runs it outside the main repository."""
    root = os.environ.get("DVC_ROOT")
    return bool(root) and Path(root).resolve() != Path.cwd().resolve()


def missing_file_hint(path: str | Path) -> str:
    """Why a file may be missing: in a queued experiment only committed or staged files exist.

    Args:
        path: the missing file, relative to the working directory (or absolute inside it).

    Returns:
        A clause to append to the error message (``"; this is a queued experiment ..."``), or
        ``""`` outside a temporary copy or for a path outside the working directory.
    """
    if not in_temporary_copy():
        return ""
    relative = Path(path)
    if relative.is_absolute():
        try:
            relative = relative.resolve().relative_to(Path.cwd().resolve())
        except ValueError:
            return ""
    where = repo_root() / relative
    found = f" ({where} exists in the main repository but is not committed)" if where.exists() else ""
    return (f"; this is a queued experiment, run in a temporary copy of the repository that only holds "
            f"files git tracks or has staged{found}: `git add {relative.as_posix()}` (or commit it) and "
            f"queue the experiment again")
