"""Where a stage runs and what it read: the facts a W&B run records so that its lineage is true.

A stage runs by hand, in the repository under DVC, or in a queued experiment's temporary copy of
it (:mod:`cropseg.core.workspace`). DVC sets ``DVC_EXP_NAME`` under ``dvc exp run``
(https://dvc.org/doc/user-guide/env; checked with a queued experiment in ``tests/test_tracking.py``).
So:

* :func:`cropseg.core.workspace.repo_root` is where records that must outlive the run go (W&B files);
* :func:`run_group` is the DVC experiment name, else the git revision: one W&B group per experiment;
* :func:`dvc_md5` hashes an input the way DVC 3 does (``hash: md5`` in ``dvc.lock``: md5 of a
  file's bytes; for a directory, md5 of the JSON list of its files' ``{md5, relpath}`` sorted by
  path, plus ``.dir``), for what *this* run read rather than read from a ``dvc.lock`` that still
  holds the previous run's hashes; files DVC or an earlier run already hashed and that are unchanged
  are not read again (:mod:`cropseg.tracking.content_hash`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from ..core.workspace import git, repo_root
from .content_hash import dvc_md5, file_md5  # noqa: F401  (the lineage API: recorded input hashes)
from .hash_cache import HashCache

DIRTY_IGNORED = ("dvc.lock", "metrics", "params.yaml")  # written by DVC, the stages, `-S` (params are recorded)


def experiment_name() -> str | None:
    """``DVC_EXP_NAME`` (set by ``dvc exp run``), else None."""
    return os.environ.get("DVC_EXP_NAME") or None


def git_state(cwd: str | Path = ".") -> dict[str, object]:
    """HEAD revision and whether tracked files differ from it, apart from :data:`DIRTY_IGNORED`
    (``dvc.lock`` and ``metrics/``: DVC and the earlier stages of the run write them;
    ``params.yaml``: ``dvc exp run -S`` edits it, and the run records its params anyway).

    Args:
        cwd: where git runs; only tracked files under it are compared.

    Returns:
        ``{"revision", "dirty", "changed"}``: HEAD (None outside git), whether a tracked file
        differs, and the first 50 changed paths.
    """
    revision = git(["rev-parse", "HEAD"], cwd)
    status = git(["status", "--porcelain", "--untracked-files=no", "--", "."]
                  + [f":(exclude){p}" for p in DIRTY_IGNORED], cwd)
    changed = sorted(line[3:] for line in (status or "").splitlines() if line.strip())
    return {"revision": revision, "dirty": bool(changed), "changed": changed[:50]}


def run_group(state: Mapping[str, object] | None = None) -> str:
    """W&B group of this run: the DVC experiment name, else the short git revision (``-dirty`` when so)."""
    name = experiment_name()
    if name:
        return name
    state = state if state is not None else git_state()
    revision = state.get("revision")
    if not revision:
        return "no-git"
    return f"{str(revision)[:7]}{'-dirty' if state.get('dirty') else ''}"


def input_hashes(inputs: Mapping[str, str | Path | None]) -> dict[str, str | None]:
    """``{name: dvc_md5}`` of every input that exists (None for one that does not).

    One memo (:class:`cropseg.tracking.hash_cache.HashCache`) serves all the inputs: unchanged files
    are not read (see :mod:`cropseg.tracking.content_hash`).
    """
    cache = HashCache()
    try:
        return {name: (dvc_md5(path, cache) if path is not None and Path(path).exists() else None)
                for name, path in inputs.items()}
    finally:
        cache.close()


def code_digest() -> str:
    """sha256 over the package's and the stage scripts' sources (paths and bytes, sorted).

    Every module of every subpackage counts, named by its path inside the package, so a moved module
    changes the digest as an edited one does.
    """
    package = Path(__file__).resolve().parents[1]  # src/cropseg (this file is src/cropseg/tracking/lineage.py)
    files = [(f"cropseg/{p.relative_to(package).as_posix()}", p) for p in sorted(package.rglob("*.py"))]
    stages = package.parent.parent / "stages"
    if stages.is_dir():
        files += [(f"stages/{p.name}", p) for p in sorted(stages.glob("*.py"))]
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + path.read_bytes())
    return digest.hexdigest()


def dvc_remote_url(root: str | Path | None = None) -> str | None:
    """URL of the default DVC remote (``core.remote``), or None when none is configured."""
    try:
        from dvc.config import Config

        config = Config(dvc_dir=str(Path(root or repo_root()) / ".dvc"))
        name = config["core"].get("remote")
        if not name:
            return None
        url = str(config["remote"][name]["url"])
    except Exception:  # no DVC, no .dvc/, a broken config: lineage goes without the remote
        return None
    if "://" not in url:
        url = Path(url).absolute().as_uri()  # DVC already resolved a relative local path
    return url.rstrip("/")


def remote_object_url(remote: str, md5: str) -> str:
    """Where ``dvc push`` puts an object of that md5 (DVC 3 layout: ``files/md5/ab/cdef...``)."""
    return f"{remote}/files/md5/{md5[:2]}/{md5[2:]}"
