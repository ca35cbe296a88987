"""The md5s DVC already computed for files, read from its state database instead of from the files.

Before ``dvc repro`` / ``dvc exp run`` runs a stage it hashes the stage's dependencies to decide
whether to run it, and keeps each file's md5 in its state database
(``dvc_data.hashfile.state.State``: a SQLite ``diskcache`` under DVC's site cache dir, keyed by
absolute path, valid while the file's inode, mtime and size are unchanged). So a stage run by DVC
finds the md5 of every input there, and a queued experiment's temporary copy has a state of its
own (DVC keys the site cache dir by the repository root) filled the same way.

The query goes through DVC's API (``Repo(root).state.get_many``), which checks inode, mtime and
size itself; only ``md5`` entries count (DVC 2's ``md5-dos2unix`` ones are other values). It costs
about 0.4 s, mostly importing DVC, so it runs only for files the stage's own memo
(:mod:`cropseg.tracking.hash_cache`) does not know and that lie inside the DVC repository of the
working directory. It runs in a daemon thread with a deadline: a locked database or a DVC error
means "not known", and the caller reads the file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

TIMEOUT_S = 30.0


def dvc_root(start: str | Path = ".") -> Path | None:
    """The nearest folder at or above ``start`` holding ``.dvc/``, or None (DVC's own search)."""
    here = Path(os.path.abspath(start))
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def dvc_state_md5s(paths: Sequence[str], timeout: float = TIMEOUT_S) -> dict[str, str]:
    """md5 of each file DVC's state database holds as unchanged.

    Args:
        paths: absolute paths of files (DVC's keys are ``os.path.abspath`` of the file).
        timeout: seconds to wait for DVC before giving up on it.

    Returns:
        path -> md5 for the files DVC knows; empty outside a DVC repository, when DVC is missing,
        fails or takes longer than ``timeout``.
    """
    root = dvc_root()
    if root is None:
        return {}
    prefix = str(root).rstrip(os.sep) + os.sep
    inside = [p for p in paths if p.startswith(prefix)]
    if not inside:
        return {}
    found: dict[str, str] = {}
    errors: list[Exception] = []

    def query() -> None:
        try:
            from dvc.repo import Repo
            from dvc_objects.fs import LocalFileSystem

            repo = Repo(str(root))
            try:
                for path, _, hash_info in repo.state.get_many(inside, LocalFileSystem(), {}):
                    if hash_info is not None and hash_info.name == "md5" and hash_info.value:
                        found[path] = hash_info.value
            finally:
                repo.close()
        except Exception as error:  # no DVC, a broken repository or state: read the files instead
            errors.append(error)

    thread = threading.Thread(target=query, name="dvc-state", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        print(f"tracking: DVC's state database did not answer within {timeout:.0f} s; reading the files")
        return {}
    if errors:
        print(f"tracking: DVC's state database not read ({type(errors[0]).__name__}: {errors[0]}); "
              f"reading the files")
        return {}
    return found
