"""Write outputs completely or not at all: build in a temporary sibling, then rename into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale(target: Path) -> list[Path]:
    """Delete temporary siblings of ``target`` left by a killed run (``.NAME.tmp-*``, ``.NAME.old-*``).

    Only one process writes a given output at a time (DVC locks the repository while a stage
    runs), so any such sibling is a leftover: ``kill -9`` skips the cleanup below.

    Returns:
        The paths removed.
    """
    removed = []
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.old-*"):
        for stale in target.parent.glob(pattern):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``target``; on success it replaces ``target``.

    On any exception the temporary directory is removed and ``target`` is left as it was, so a
    failed stage never leaves a half-written output behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs get the usual permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_file(target: str | Path, mode: str = "w") -> Iterator:
    """Open a temporary sibling of ``target`` for writing; rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with open(tmp, mode) as handle:
            yield handle
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def restore_hint(output: str | Path) -> str:
    """The last line of a failed stage's error: how to get its previous output back.

    ``dvc repro`` deletes a stage's outputs before it runs the command (unless they are
    ``persist: true``), so after a failure the previous ``output`` is gone from the workspace,
    although DVC's cache still holds it.
    """
    output = Path(output).as_posix()
    return (f"(under `dvc repro` the previous {output} was deleted before this stage ran; "
            f"`dvc checkout {output}` restores it from the DVC cache)")
